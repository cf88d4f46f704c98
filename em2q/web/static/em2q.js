// Behaviour every page shares, kept out of the HTML so the Content-Security-Policy can forbid
// inline scripts: selects that submit their form, forms that ask before they act, "back" links.
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("select[data-autosubmit]").forEach((select) => {
    select.addEventListener("change", () => select.form.submit());
  });
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
  document.querySelectorAll("a[data-back]").forEach((link) => {
    link.addEventListener("click", (event) => { event.preventDefault(); window.history.back(); });
  });
});

// The CSRF token of this page (the catalog refuses a change without it): scripts that send a
// request themselves put it in the X-CSRF-Token header.
window.em2qCsrfToken = () => document.querySelector('meta[name="csrf-token"]')?.content || "";
