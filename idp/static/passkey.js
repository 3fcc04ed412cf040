// Passkey ceremonies for the login and account pages. The server's WebAuthn options
// travel as JSON with binary fields in base64url; the browser API wants ArrayBuffers.
'use strict';

(function () {
  const toBytes = (text) => {
    const base64 = text.replace(/-/g, '+').replace(/_/g, '/');
    const padded = base64 + '='.repeat((4 - (base64.length % 4)) % 4);
    return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
  };
  const toText = (buffer) => {
    const bytes = new Uint8Array(buffer);
    let binary = '';
    for (const b of bytes) binary += String.fromCharCode(b);
    return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  };
  const showError = (message) => {
    const box = document.getElementById('passkey-error');
    if (box) {
      box.textContent = message;
      box.hidden = false;
      box.focus?.();
    }
  };
  async function post(url, body, csrf) {
    const headers = { 'content-type': 'application/json' };
    if (csrf) headers['x-csrf-token'] = csrf;
    const response = await fetch(url, {
      method: 'POST', headers, body: JSON.stringify(body), credentials: 'same-origin',
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.error_description || data.error || `HTTP ${response.status}`);
    return data;
  }

  async function register(button) {
    const csrf = button.dataset.csrf;
    const name = document.getElementById('passkey-name')?.value || 'Passkey';
    const start = await post(button.dataset.start, {}, csrf);
    const options = start.options.publicKey;
    options.challenge = toBytes(options.challenge);
    options.user.id = toBytes(options.user.id);
    for (const c of options.excludeCredentials || []) c.id = toBytes(c.id);
    const credential = await navigator.credentials.create({ publicKey: options });
    const response = {
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      response: {
        attestationObject: toText(credential.response.attestationObject),
        clientDataJSON: toText(credential.response.clientDataJSON),
      },
      extensions: credential.getClientExtensionResults?.() || {},
    };
    await post(button.dataset.finish, { ceremony: start.ceremony, name, credential: response }, csrf);
    window.location.reload();
  }

  async function login(form) {
    const nationalId = document.getElementById('national-id').value;
    const start = await post(form.dataset.start, { national_id: nationalId });
    const options = start.options.publicKey;
    options.challenge = toBytes(options.challenge);
    for (const c of options.allowCredentials || []) c.id = toBytes(c.id);
    const credential = await navigator.credentials.get({ publicKey: options });
    const response = {
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      response: {
        authenticatorData: toText(credential.response.authenticatorData),
        clientDataJSON: toText(credential.response.clientDataJSON),
        signature: toText(credential.response.signature),
        userHandle: credential.response.userHandle ? toText(credential.response.userHandle) : null,
      },
      extensions: credential.getClientExtensionResults?.() || {},
    };
    const finish = await post(form.dataset.finish, { ceremony: start.ceremony, credential: response });
    window.location.assign(finish.location);
  }

  const add = document.getElementById('add-passkey');
  if (add) {
    add.addEventListener('click', () => {
      add.disabled = true;
      register(add).catch((e) => showError(e.message)).finally(() => { add.disabled = false; });
    });
  }
  const form = document.getElementById('passkey-form');
  if (form) {
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      login(form).catch((e) => showError(e.message));
    });
  }
})();
