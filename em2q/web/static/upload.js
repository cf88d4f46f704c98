// Upload with a progress bar: the form is sent by XHR (upload.onprogress), the server answers
// JSON: 201 {url} → go to the measurement page; 422 {errors: {field: message}, general: [..]}
// → each message next to its field. Without JavaScript the form posts normally.
document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("upload-form");
  if (!form) return;
  const bar = document.getElementById("upload-progress");
  const percent = document.getElementById("upload-percent");
  const phase = document.getElementById("upload-phase");
  const button = document.getElementById("upload-submit");

  function showErrors(errors, general) {
    form.querySelectorAll("[data-error-for]").forEach((slot) => {
      const message = errors[slot.dataset.errorFor] || "";
      slot.textContent = message;
      slot.closest(".field").classList.toggle("invalid", message !== "");
    });
    const box = document.getElementById("general-errors");
    box.replaceChildren(...general.map((text) => Object.assign(document.createElement("p"), {textContent: text})));
    const first = form.querySelector(".field.invalid");
    if (first) first.scrollIntoView({block: "center"});
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const request = new XMLHttpRequest();
    request.open("POST", form.action);
    request.setRequestHeader("Accept", "application/json");
    request.setRequestHeader("X-CSRF-Token", window.em2qCsrfToken());
    document.getElementById("progress").hidden = false;
    button.disabled = true;
    phase.textContent = "sending …";
    request.upload.onprogress = (e) => {
      if (!e.lengthComputable) return;
      const done = Math.round((100 * e.loaded) / e.total);
      bar.value = done;
      percent.textContent = `${done} %`;
    };
    request.upload.onload = () => { phase.textContent = "validating and storing …"; };
    request.onload = () => {
      button.disabled = false;
      let answer = {};
      try { answer = JSON.parse(request.responseText); } catch (e) { /* not JSON */ }
      if (request.status === 201) {
        phase.textContent = "registered";
        window.location.assign(answer.url);
      } else if (request.status === 422) {
        phase.textContent = "refused: see the messages next to the fields";
        showErrors(answer.errors || {}, answer.general || []);
      } else {
        phase.textContent = "";
        showErrors({}, [answer.message || `upload failed: HTTP ${request.status}`]);
      }
    };
    request.onerror = () => {
      button.disabled = false;
      showErrors({}, ["the server could not be reached; try again"]);
    };
    request.send(new FormData(form));
  });
});
