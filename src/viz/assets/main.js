// Reads the page's data and draws the view it names.
(function () {
  const data = JSON.parse(document.getElementById("pzt-data").textContent);
  const app = document.getElementById("app");
  window.pztData = data;
  if (data.page === "model" || data.page === "selection") renderModelPage(app, data);
  else if (data.page === "arrays") renderArraysPage(app, data);
  else if (data.page === "report") renderReport(app, data);
  else app.textContent = "unknown page kind: " + data.page;
})();
