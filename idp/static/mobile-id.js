// The mobile-ID waiting page: asks the provider, one long poll after another, whether
// the citizen has confirmed on the phone, then follows the login on. Without scripts
// the page's Continue link does the same waiting on the server.
'use strict';

(function () {
  const status = document.getElementById('mobile-status');
  if (!status) return;
  const url = status.dataset.status;
  const showError = (message, retry) => {
    const box = document.getElementById('mobile-error');
    box.textContent = message;
    box.hidden = false;
    status.hidden = true;
    const link = document.getElementById('mobile-continue');
    if (retry && link) {
      link.href = retry;
      link.textContent = link.dataset.retry || link.textContent;
      link.id = 'mobile-retry';
    } else if (link) {
      link.hidden = true;
    }
  };
  async function poll() {
    for (;;) {
      let answer;
      try {
        const response = await fetch(url, {
          headers: { accept: 'application/json' }, credentials: 'same-origin',
        });
        answer = await response.json();
      } catch (e) {
        // A dropped connection: wait a moment and ask again.
        await new Promise((resolve) => setTimeout(resolve, 2000));
        continue;
      }
      if (answer.state === 'waiting') continue;
      if (answer.state === 'done') {
        window.location.assign(answer.location);
        return;
      }
      showError(answer.message || answer.error_description || 'Mobile ID failed.', answer.retry);
      return;
    }
  }
  poll();
})();
