// Copy buttons: <button class="copy" data-copy="ID"> copies the value of #ID.
// The pages work without this script (the values are selectable text fields).
"use strict";
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button.copy");
  if (!button) return;
  const field = document.getElementById(button.dataset.copy);
  const status = button.parentElement.querySelector(".copied");
  field.select();
  try {
    await navigator.clipboard.writeText(field.value);
    if (status) status.textContent = "Copied";
  } catch (err) {
    // No clipboard permission: the text is selected, Ctrl+C copies it.
    if (status) status.textContent = "Press Ctrl+C to copy";
  }
});
