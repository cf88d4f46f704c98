// ROIs drawn on the TIC image, the segment map with its segments, colocalised ions
// (the JSON routes of em2q/web/routes/spatial.py; geometry in image pixel coordinates).
document.addEventListener("DOMContentLoaded", () => {
  const section = document.getElementById("spatial");
  if (!section) return;
  const id = section.dataset.id, p = encodeURIComponent(section.dataset.p);
  const nx = Number(section.dataset.nx), ny = Number(section.dataset.ny);
  const svg = document.getElementById("roi-svg");
  const problem = document.getElementById("roi-problem");
  const token = document.querySelector('meta[name="csrf-token"]')?.content || "";
  const headers = {"Content-Type": "application/json", "X-CSRF-Token": token, Accept: "application/json"};
  const NS = "http://www.w3.org/2000/svg";
  let points = [];

  const ring = (pts) => pts.map(([x, y]) => `${x},${y}`).join(" ");
  const drawShape = (pts, colour, dashed) => {
    const shape = document.createElementNS(NS, "polygon");
    shape.setAttribute("points", ring(pts));
    shape.setAttribute("fill", colour); shape.setAttribute("fill-opacity", "0.25");
    shape.setAttribute("stroke", colour); shape.setAttribute("stroke-width", "0.15");
    if (dashed) shape.setAttribute("stroke-dasharray", "0.4 0.3");
    svg.appendChild(shape);
  };
  const corners = () => {
    if (document.getElementById("roi-shape").value !== "rectangle" || points.length < 2) return points;
    const [[x0, y0], [x1, y1]] = points;
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]];
  };
  const redraw = (rois) => {
    svg.querySelectorAll("polygon.draft, polygon").forEach((n) => n.remove());
    (rois || []).forEach((r) => r.geometry.coordinates.forEach((poly) => {
      const rings = r.geometry.type === "Polygon" ? [poly] : poly;
      drawShape(rings[0], r.colour || "#1f77b4", false);
    }));
    if (points.length) drawShape(corners(), document.getElementById("roi-colour").value, true);
  };
  let current = [];
  const loadRois = async () => {
    const answer = await fetch(`/api/measurements/${id}/rois`, {headers});
    current = answer.ok ? await answer.json() : [];
    const list = document.getElementById("roi-list");
    list.replaceChildren(...current.map((r) => {
      const item = document.createElement("li");
      item.innerHTML = `<span style="color:${r.colour}">■</span> <a href="#" data-roi="${r.name}"></a> · ${r.pixel_count ?? "?"} px · ${r.author} · <form method="post" class="inline roi-open"><input type="hidden" name="csrf_token"><button type="submit">open in notebook</button></form> <a class="roi-notebook" download>.ipynb</a> <button type="button" data-delete="${r.name}">delete</button>`;
      item.querySelector("a").textContent = r.name;
      item.querySelector("a.roi-notebook").href = `/measurements/${id}/notebook.ipynb?roi=${encodeURIComponent(r.name)}&p=${p}`;
      item.querySelector("form.roi-open").action = `/measurements/${id}/notebook?roi=${encodeURIComponent(r.name)}&p=${p}`;
      item.querySelector("form.roi-open input").value = token;
      return item;
    }));
    redraw(current);
  };
  svg.addEventListener("click", (event) => {
    const box = svg.getBoundingClientRect();
    const x = Math.round(((event.clientX - box.left) / box.width) * nx * 10) / 10;
    const y = Math.round(((event.clientY - box.top) / box.height) * ny * 10) / 10;
    if (document.getElementById("roi-shape").value === "rectangle" && points.length >= 2) points = [];
    points.push([x, y]);
    redraw(current);
  });
  document.getElementById("roi-clear").addEventListener("click", () => { points = []; redraw(current); });
  document.getElementById("roi-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const pts = corners();
    if (pts.length < 3) { problem.textContent = "click at least 3 corners (rectangle: 2)"; return; }
    const body = {name: document.getElementById("roi-name").value, colour: document.getElementById("roi-colour").value,
                  geometry: {type: "Polygon", coordinates: [[...pts, pts[0]]]}};
    const answer = await fetch(`/api/measurements/${id}/rois`, {method: "POST", headers, body: JSON.stringify(body)});
    if (!answer.ok) { problem.textContent = (await answer.text()).slice(0, 300); return; }
    problem.textContent = ""; points = []; loadRois();
  });
  document.getElementById("roi-list").addEventListener("click", async (event) => {
    const target = event.target;
    if (target.dataset.delete) {
      await fetch(`/api/measurements/${id}/rois/${encodeURIComponent(target.dataset.delete)}`, {method: "DELETE", headers});
      loadRois(); return;
    }
    if (!target.dataset.roi) return;
    event.preventDefault();
    const answer = await fetch(`/api/measurements/${id}/rois/${encodeURIComponent(target.dataset.roi)}/spectrum?p=${p}`, {headers});
    const plot = document.getElementById("mean-spectrum");
    if (!answer.ok || !plot) return;
    const s = await answer.json();
    Plotly.addTraces(plot, {x: s.mz, y: s.intensity, name: `ROI ${s.name} (${s.pixels} px)`, mode: "lines", line: {color: s.colour, width: 1}});
    const q = s.qc, fmt = (v) => (v === null ? "n/a" : Number(v).toPrecision(3));
    document.getElementById("roi-qc").textContent = `ROI ${s.name} (${s.parameter_set}): ${q.pixels} px · TIC median ${fmt(q.tic_median)} · median SNR ${fmt(q.median_snr)} · median peaks ${fmt(q.median_peaks)} · empty ${fmt(100 * q.empty_fraction)} %`;
  });

  const loadSegments = async () => {
    const answer = await fetch(`/api/measurements/${id}/segmentation?p=${p}`, {headers});
    const map = document.getElementById("segment-map");
    if (!answer.ok) { map.hidden = true; document.getElementById("segment-waiting").hidden = false; return; }
    const result = await answer.json();
    document.getElementById("segment-list").replaceChildren(...result.segments.map((s) => {
      const item = document.createElement("li");
      const top = s.top.slice(0, 5).map((t) => `${t.mz.toFixed(4)} (d ${t.effect_size.toFixed(1)})`).join(", ");
      item.innerHTML = `<span style="color:${s.colour}">■</span> segment ${s.segment} · ${s.pixels} px · top m/z: ${top} <button type="button" data-segment="${s.segment}">make ROI</button>`;
      return item;
    }));
  };
  document.getElementById("segment-list").addEventListener("click", async (event) => {
    const segment = event.target.dataset.segment;
    if (segment === undefined) return;
    await fetch(`/api/measurements/${id}/segments/${segment}/roi?p=${p}`, {method: "POST", headers, body: JSON.stringify({name: `segment-${segment}`})});
    loadRois();
  });
  document.getElementById("coloc-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const mz = document.getElementById("coloc-mz").value;
    const answer = await fetch(`/api/measurements/${id}/colocalisation?p=${p}&mz=${encodeURIComponent(mz)}`, {headers});
    const list = document.getElementById("coloc-list");
    if (!answer.ok) { list.replaceChildren(Object.assign(document.createElement("li"), {textContent: (await answer.text()).slice(0, 200)})); return; }
    const result = await answer.json();
    list.replaceChildren(...result.ranked.map((r) => Object.assign(document.createElement("li"), {textContent: `m/z ${r.mz.toFixed(4)} · ${result.method} ${r.similarity.toFixed(3)}`})));
  });
  loadRois();
  loadSegments();
});
