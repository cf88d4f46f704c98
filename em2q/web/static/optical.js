// The optical image page (em2q/web/routes/optical.py): upload, landmark pairs clicked on the
// optical and the TIC image (image pixel coordinates), the fit and its residuals, the overlay.
document.addEventListener("DOMContentLoaded", () => {
  const section = document.getElementById("optical");
  if (!section) return;
  const id = section.dataset.id, p = encodeURIComponent(section.dataset.p);
  const nx = Number(section.dataset.nx), ny = Number(section.dataset.ny);
  const width = Number(section.dataset.width), height = Number(section.dataset.height);
  const token = document.querySelector('meta[name="csrf-token"]')?.content || "";
  const NS = "http://www.w3.org/2000/svg";
  const upload = document.getElementById("optical-upload");
  if (upload) upload.addEventListener("submit", async (event) => {
    event.preventDefault();
    const answer = await fetch(`/api/measurements/${id}/optical`, {
      method: "POST", body: new FormData(upload), headers: {"X-CSRF-Token": token, Accept: "application/json"},
    });
    if (answer.ok) { window.location.reload(); return; }
    const body = await answer.json().catch(() => ({}));
    document.getElementById("optical-upload-problem").textContent = body.message || answer.statusText;
  });
  const image = document.getElementById("optical-image");
  if (!image) return;
  const tic = document.getElementById("optical-tic");
  const pairs = [];  // [x, y, msi_x, msi_y], msi null until clicked
  let residuals = [];
  const at = (event, element, w, h) => {
    const box = element.getBoundingClientRect();
    return [Math.round(((event.clientX - box.left) / box.width) * w * 100) / 100,
            Math.round(((event.clientY - box.top) / box.height) * h * 100) / 100];
  };
  const mark = (svg, x, y, r, label) => {
    const dot = document.createElementNS(NS, "circle");
    dot.setAttribute("cx", x); dot.setAttribute("cy", y); dot.setAttribute("r", r);
    dot.setAttribute("fill", "none"); dot.setAttribute("stroke", "#d62728"); dot.setAttribute("stroke-width", r / 3);
    const text = document.createElementNS(NS, "text");
    text.setAttribute("x", x + r); text.setAttribute("y", y - r); text.setAttribute("font-size", r * 3);
    text.setAttribute("fill", "#d62728"); text.textContent = label;
    svg.append(dot, text);
  };
  const redraw = () => {
    const marks = document.getElementById("optical-marks"), ticMarks = document.getElementById("optical-tic-marks");
    marks.replaceChildren(); ticMarks.replaceChildren();
    const rows = pairs.map((pair, i) => {
      mark(marks, pair[0], pair[1], Math.max(width, height) / 100, String(i + 1));
      if (pair[2] !== null) mark(ticMarks, pair[2], pair[3], Math.max(nx, ny) / 60, String(i + 1));
      const row = document.createElement("tr");
      row.innerHTML = `<td>${i + 1}</td><td>${pair[0]}, ${pair[1]}</td><td>${pair[2] ?? "click the TIC image"}${pair[2] !== null ? ", " + pair[3] : ""}</td><td>${residuals[i] !== undefined ? residuals[i].toFixed(3) : ""}</td>`;
      return row;
    });
    document.querySelector("#landmarks tbody").replaceChildren(...rows);
  };
  image.addEventListener("click", (event) => {
    if (pairs.length && pairs[pairs.length - 1][2] === null) pairs.pop();
    pairs.push([...at(event, image, width, height), null, null]);
    residuals = []; redraw();
  });
  tic.addEventListener("click", (event) => {
    const last = pairs[pairs.length - 1];
    if (!last || last[2] !== null) return;
    [last[2], last[3]] = at(event, tic, nx, ny);
    redraw();
  });
  document.getElementById("landmarks-clear").addEventListener("click", () => { pairs.length = 0; residuals = []; redraw(); });
  const problem = document.getElementById("landmarks-problem");
  document.getElementById("landmarks-fit").addEventListener("click", async () => {
    problem.textContent = "";
    const landmarks = pairs.filter((pair) => pair[2] !== null);
    const answer = await fetch(`/api/measurements/${id}/optical/registration`, {
      method: "POST", body: JSON.stringify({landmarks}),
      headers: {"Content-Type": "application/json", "X-CSRF-Token": token, Accept: "application/json"},
    });
    const body = await answer.json().catch(() => ({}));
    if (!answer.ok) { problem.textContent = body.message || answer.statusText; return; }
    residuals = body.residuals_px;
    document.getElementById("registration").textContent =
      `Registered: RMS residual ${body.rms_px.toFixed(3)} MSI px over ${landmarks.length} landmarks.`;
    redraw(); showOverlay();
  });
  const layerImg = document.getElementById("overlay-layer-img");
  const opacity = document.getElementById("overlay-opacity");
  opacity.addEventListener("input", () => { layerImg.style.opacity = opacity.value; });
  const showOverlay = () => {
    const layer = document.getElementById("overlay-layer").value;
    const mz = document.getElementById("overlay-mz").value;
    const query = `layer=${layer}&p=${p}` + (layer === "ion" ? `&mz=${encodeURIComponent(mz)}` : "");
    layerImg.src = `/measurements/${id}/optical/layer.png?${query}&t=${Date.now()}`;
    layerImg.hidden = false;
  };
  document.getElementById("overlay-form").addEventListener("submit", (event) => { event.preventDefault(); showOverlay(); });

  // A ROI drawn on the optical image (optical pixels; the server maps it onto the MSI grid).
  const roiSvg = document.getElementById("optical-roi-svg");
  const roiProblem = document.getElementById("optical-roi-problem");
  let corners = [];
  const shape = () => {
    if (document.getElementById("optical-roi-shape").value !== "rectangle" || corners.length < 2) return corners;
    const [[x0, y0], [x1, y1]] = corners;
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]];
  };
  const drawRoi = () => {
    roiSvg.replaceChildren();
    if (!corners.length) return;
    const colour = document.getElementById("optical-roi-colour").value;
    const polygon = document.createElementNS(NS, "polygon");
    polygon.setAttribute("points", shape().map(([x, y]) => `${x},${y}`).join(" "));
    polygon.setAttribute("fill", colour); polygon.setAttribute("fill-opacity", "0.25");
    polygon.setAttribute("stroke", colour); polygon.setAttribute("stroke-width", Math.max(width, height) / 300);
    roiSvg.appendChild(polygon);
  };
  roiSvg.addEventListener("click", (event) => {
    if (document.getElementById("optical-roi-shape").value === "rectangle" && corners.length >= 2) corners = [];
    corners.push(at(event, roiSvg, width, height));
    drawRoi();
  });
  document.getElementById("optical-roi-clear").addEventListener("click", () => { corners = []; drawRoi(); });
  document.getElementById("optical-roi-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const pts = shape();
    if (pts.length < 3) { roiProblem.textContent = "click at least 3 corners (rectangle: 2)"; return; }
    const body = {name: document.getElementById("optical-roi-name").value,
                  colour: document.getElementById("optical-roi-colour").value,
                  geometry: {type: "Polygon", coordinates: [[...pts, pts[0]]]}};
    const answer = await fetch(`/api/measurements/${id}/optical/rois`, {
      method: "POST", body: JSON.stringify(body),
      headers: {"Content-Type": "application/json", "X-CSRF-Token": token, Accept: "application/json"},
    });
    const saved = await answer.json().catch(() => ({}));
    if (!answer.ok) { roiProblem.textContent = saved.message || answer.statusText; return; }
    roiProblem.textContent = ""; corners = []; drawRoi();
    document.getElementById("optical-roi-saved").textContent = `Saved ROI ${saved.name}: ${saved.pixel_count} MSI pixels.`;
  });
});
