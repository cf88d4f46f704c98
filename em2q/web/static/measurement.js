// The measurement's status while it is processed: polls the status endpoint until READY or
// FAILED, then reloads the page so the results appear.
document.addEventListener("DOMContentLoaded", () => {
  const badge = document.getElementById("status");
  if (!badge || badge.dataset.final === "true") return;
  const reason = document.getElementById("status-reason");
  const poll = async () => {
    try {
      const answer = await fetch(`/api/measurements/${badge.dataset.id}/status`, {headers: {Accept: "application/json"}});
      if (answer.ok) {
        const state = await answer.json();
        badge.textContent = state.status;
        badge.className = `status status-${state.status}`;
        reason.textContent = state.reason || "";
        if (state.final) { window.location.reload(); return; }
      }
    } catch (e) { /* the server restarts: keep polling */ }
    window.setTimeout(poll, 2000);
  };
  window.setTimeout(poll, 2000);
});

// Plotly figures: the JSON built by plotly.py sits in a <script type="application/json">.
// Spectra are WebGL lines; where the browser cannot draw WebGL (a remote desktop, a VM or a
// headless browser without a GPU: Plotly then shows "WebGL is not supported"), the same
// decimated points are drawn as SVG instead.
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-figure]").forEach((target) => {
    const figure = JSON.parse(document.getElementById(target.dataset.figure).textContent);
    Plotly.newPlot(target, figure.data, figure.layout, {responsive: true, displaylogo: false}).then(() => {
      if (!target.querySelector(".no-webgl")) return;
      const gl = figure.data.flatMap((trace, i) => (trace.type === "scattergl" ? [i] : []));
      Plotly.restyle(target, {type: "scatter"}, gl).then(() =>
        target.querySelectorAll(".no-webgl").forEach((notice) => notice.remove()));
    });
  });
});

// A workflow just started: show the backfill's status until it is done.
document.addEventListener("DOMContentLoaded", () => {
  const banner = document.getElementById("launched");
  if (!banner) return;
  const label = document.getElementById("launch-status");
  const poll = async () => {
    try {
      const answer = await fetch(`/api/workflows/${banner.dataset.launch}`);
      if (answer.ok) {
        const state = await answer.json();
        label.textContent = state.status.toLowerCase().replaceAll("_", " ");
        if (state.done) return;
      }
    } catch (e) { /* keep polling */ }
    window.setTimeout(poll, 3000);
  };
  poll();
});
