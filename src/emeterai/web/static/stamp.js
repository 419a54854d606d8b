// Place the 100 x 100 pt stamp on the page preview: click/tap, drag, or arrow keys.
// Positions are points from the lower-left of the visible page, as the server expects:
// the preview shows exactly the visible page (CropBox after /Rotate), so
// x_pt = left_px * width_pt / image_width_px and y_pt measured up from the bottom.
(function () {
  "use strict";
  var STAMP_PT = 100;
  var placer = document.getElementById("placer");
  if (!placer) return;
  var image = document.getElementById("page-image");
  var box = document.getElementById("stamp-box");
  var xField = document.getElementById("x");
  var yField = document.getElementById("y");
  var pageField = document.getElementById("page-field");
  var pageChoice = document.getElementById("page-choice");
  var pageGo = document.getElementById("page-go");
  var pages = JSON.parse(placer.dataset.pages);
  var draftBase = image.getAttribute("src").replace(/\/preview\/\d+\.png$/, "");
  var widthPt = parseFloat(placer.dataset.widthPt);
  var heightPt = parseFloat(placer.dataset.heightPt);
  var x = parseFloat(xField.value) || 0;
  var y = parseFloat(yField.value) || 0;

  function clamp(value, low, high) { return Math.min(Math.max(value, low), high); }
  function round(value) { return Math.round(value * 10) / 10; }
  function scale() { return image.clientWidth / widthPt; } // CSS px per point

  function draw() {
    var s = scale();
    if (!s) return;
    box.style.width = STAMP_PT * s + "px";
    box.style.height = STAMP_PT * s + "px";
    box.style.left = x * s + "px";
    box.style.top = (heightPt - y - STAMP_PT) * s + "px";
    box.setAttribute("aria-valuenow", String(Math.round(x)));
    box.setAttribute("aria-valuetext", "x " + round(x) + " pt, y " + round(y) + " pt");
    box.hidden = false;
  }

  // The placement lives in the page's URL too, so that the confirmation's Referer carries
  // it: a confirmation sent to the waiting room comes back to the same page and spot.
  function remember() {
    if (!window.history || !window.history.replaceState) return;
    var params = new URLSearchParams(window.location.search);
    params.set("page", pageField.value);
    params.set("x", String(round(x)));
    params.set("y", String(round(y)));
    window.history.replaceState(null, "", window.location.pathname + "?" + params.toString());
  }

  function setPosition(newX, newY) {
    x = round(clamp(newX, 0, Math.max(0, widthPt - STAMP_PT)));
    y = round(clamp(newY, 0, Math.max(0, heightPt - STAMP_PT)));
    xField.value = x;
    yField.value = y;
    draw();
    remember();
  }

  // The stamp's centre goes where the pointer is.
  function fromPointer(event) {
    var rect = image.getBoundingClientRect();
    var s = scale();
    var px = (event.clientX - rect.left) / s;
    var py = heightPt - (event.clientY - rect.top) / s;
    setPosition(px - STAMP_PT / 2, py - STAMP_PT / 2);
  }

  var dragging = false;
  placer.addEventListener("pointerdown", function (event) {
    dragging = true;
    placer.setPointerCapture(event.pointerId);
    fromPointer(event);
    event.preventDefault();
  });
  placer.addEventListener("pointermove", function (event) { if (dragging) fromPointer(event); });
  placer.addEventListener("pointerup", function () { dragging = false; box.focus(); });
  placer.addEventListener("pointercancel", function () { dragging = false; });

  box.addEventListener("keydown", function (event) {
    var step = event.shiftKey ? 1 : 10;
    var moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, step], ArrowDown: [0, -step] };
    if (event.key === "Home") { setPosition(0, y); event.preventDefault(); return; }
    if (event.key === "End") { setPosition(widthPt, y); event.preventDefault(); return; }
    var move = moves[event.key];
    if (!move) return;
    setPosition(x + move[0], y + move[1]);
    event.preventDefault();
  });

  [xField, yField].forEach(function (field) {
    field.addEventListener("input", function () {
      var newX = parseFloat(xField.value), newY = parseFloat(yField.value);
      if (isFinite(newX) && isFinite(newY)) {
        x = clamp(newX, 0, widthPt); y = clamp(newY, 0, heightPt); draw(); remember();
      }
    });
  });

  if (pageChoice) {
    if (pageGo) pageGo.hidden = true;
    pageChoice.addEventListener("change", function () {
      var number = parseInt(pageChoice.value, 10);
      var size = pages[number - 1];
      widthPt = size[0]; heightPt = size[1];
      pageField.value = String(number);
      xField.max = String(Math.max(0, widthPt - STAMP_PT));
      yField.max = String(Math.max(0, heightPt - STAMP_PT));
      image.setAttribute("height", String(Math.round(1000 * heightPt / widthPt)));
      image.src = draftBase + "/preview/" + number + ".png";
      image.alt = image.alt.replace(/\d+/, String(number));
      setPosition(widthPt - STAMP_PT - 36, 36);
    });
  }

  window.addEventListener("resize", draw);
  if (image.complete) draw(); else image.addEventListener("load", draw);
  image.addEventListener("load", draw);
  setPosition(x, y);
})();
