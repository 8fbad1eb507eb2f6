// The only script of the UI besides htmx (no inline script: the CSP forbids it).
// Everything works without it; it adds the print button of the access report.
document.addEventListener("click", function (event) {
  var target = event.target;
  if (target instanceof Element && target.closest("[data-print]")) {
    window.print();
  }
});
