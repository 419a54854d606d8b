// Checks the chosen file in the browser before it is sent; the server checks again.
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  if (!form) return;
  var input = form.querySelector("input[type=file]");
  var box = document.getElementById("upload-error");
  var bytesMax = parseInt(form.dataset.bytesMax, 10);

  function show(message) {
    box.innerHTML = "";
    if (!message) return;
    var div = document.createElement("div");
    div.className = "alert error";
    var p = document.createElement("p");
    p.textContent = message;
    div.appendChild(p);
    box.appendChild(div);
  }

  function problem() {
    var file = input.files && input.files[0];
    if (!file) return null;
    var named = /\.pdf$/i.test(file.name);
    if (!(file.type === "application/pdf" || (file.type === "" && named) || named)) {
      return form.dataset.msgType;
    }
    if (file.size > bytesMax) return form.dataset.msgSize;
    return null;
  }

  input.addEventListener("change", function () {
    var message = problem();
    show(message);
    input.setAttribute("aria-invalid", message ? "true" : "false");
  });
  form.addEventListener("submit", function (event) {
    var message = problem();
    if (message) {
      event.preventDefault();
      show(message);
      input.focus();
    }
  });
})();
