// Filters the failed rows: every word typed must appear in the row's text.
(function () {
  var input = document.getElementById("filter");
  var table = document.getElementById("failed-rows");
  var shown = document.getElementById("shown");
  if (!input || !table) { return; }
  var rows = Array.prototype.slice.call(table.tBodies[0].rows);
  var texts = rows.map(function (r) { return r.textContent.toLowerCase(); });
  function apply() {
    var words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
    var n = 0;
    rows.forEach(function (r, i) {
      var match = words.every(function (w) { return texts[i].indexOf(w) >= 0; });
      r.hidden = !match;
      if (match) { n += 1; }
    });
    shown.textContent = n + " of " + rows.length + " listed rows shown";
  }
  input.addEventListener("input", apply);
  apply();
})();
