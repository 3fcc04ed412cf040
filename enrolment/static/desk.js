// The desk's few interactive steps: staff passkeys (enrolment, login, a supervisor's
// approval of exceptions or of a deactivation), the camera, and printing. Everything
// else is plain forms. WebAuthn options travel as JSON with binary fields in base64url;
// the browser API wants ArrayBuffers.
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
  const showError = (id, message) => {
    const box = document.getElementById(id);
    if (box) {
      box.textContent = message;
      box.hidden = false;
    }
  };
  async function post(url, body, csrf) {
    const headers = { 'content-type': 'application/json' };
    if (csrf) headers['x-csrf-token'] = csrf;
    const response = await fetch(url, {
      method: 'POST', headers, body: JSON.stringify(body), credentials: 'same-origin',
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.detail || data.title || `HTTP ${response.status}`);
    return data;
  }

  async function create(options) {
    const o = options.publicKey;
    o.challenge = toBytes(o.challenge);
    o.user.id = toBytes(o.user.id);
    for (const c of o.excludeCredentials || []) c.id = toBytes(c.id);
    const credential = await navigator.credentials.create({ publicKey: o });
    return {
      id: credential.id,
      rawId: toText(credential.rawId),
      type: credential.type,
      response: {
        attestationObject: toText(credential.response.attestationObject),
        clientDataJSON: toText(credential.response.clientDataJSON),
      },
      extensions: credential.getClientExtensionResults?.() || {},
    };
  }

  async function get(options) {
    const o = options.publicKey;
    o.challenge = toBytes(o.challenge);
    for (const c of o.allowCredentials || []) c.id = toBytes(c.id);
    const credential = await navigator.credentials.get({ publicKey: o });
    return {
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
  }

  // A passkey ceremony driven by a form or button: start, browser prompt, finish, go on.
  function ceremony(element, startBody, finishBody, csrf) {
    element.addEventListener(element.tagName === 'FORM' ? 'submit' : 'click', async (event) => {
      // A supervisor's ID card instead: the form goes to the card listener as it is.
      if (event.submitter && 'card' in event.submitter.dataset) return;
      event.preventDefault();
      try {
        const start = await post(element.dataset.start, startBody(), csrf);
        const credential = element.dataset.kind === 'create'
          ? await create(start.options) : await get(start.options);
        const finish = await post(element.dataset.finish,
          Object.assign({ ceremony: start.ceremony, credential }, finishBody()), csrf);
        window.location.assign(finish.location);
      } catch (e) {
        showError('passkey-error', e.message || String(e));
      }
    });
  }

  function camera(box) {
    const video = document.getElementById('camera-video');
    const capture = document.getElementById('camera-capture');
    document.getElementById('camera-start').addEventListener('click', async () => {
      try {
        video.srcObject = await navigator.mediaDevices.getUserMedia({ video: true });
        video.hidden = false;
        capture.hidden = false;
        capture.focus();
      } catch (e) {
        showError('camera-error', `The camera cannot be used: ${e.message || e}`);
      }
    });
    capture.addEventListener('click', async () => {
      const canvas = document.createElement('canvas');
      canvas.width = video.videoWidth || 640;
      canvas.height = video.videoHeight || 480;
      canvas.getContext('2d').drawImage(video, 0, 0, canvas.width, canvas.height);
      for (const track of video.srcObject?.getTracks() || []) track.stop();
      try {
        const done = await post(box.dataset.upload,
          { image: canvas.toDataURL('image/jpeg', 0.9) }, box.dataset.csrf);
        window.location.assign(done.location);
      } catch (e) {
        showError('camera-error', e.message || String(e));
      }
    });
  }

  document.addEventListener('DOMContentLoaded', () => {
    const enrol = document.getElementById('enrol');
    if (enrol) {
      enrol.dataset.kind = 'create';
      ceremony(enrol, () => ({}), () => ({}));
    }
    const login = document.getElementById('login');
    if (login) {
      ceremony(login, () => ({ staff_id: document.getElementById('staff-id').value }), () => ({}));
    }
    const approve = document.getElementById('approve');
    if (approve) {
      ceremony(approve,
        () => ({ supervisor_id: document.getElementById('supervisor-id').value }),
        () => ({ version: Number(approve.dataset.version) }),
        approve.dataset.csrf);
    }
    // A deactivation: the supervisor's passkey approves exactly this reason and note.
    const deactivate = document.getElementById('deactivate');
    if (deactivate) {
      const field = (id) => document.getElementById(id).value;
      ceremony(deactivate,
        () => ({
          supervisor_id: field('deactivate-supervisor'),
          reason: field('deactivate-reason'),
          note: field('deactivate-note'),
        }),
        () => ({
          version: Number(deactivate.dataset.version),
          reason: field('deactivate-reason'),
          note: field('deactivate-note'),
        }),
        deactivate.dataset.csrf);
    }
    const box = document.getElementById('camera');
    if (box) camera(box);
    const print = document.getElementById('print');
    if (print) print.addEventListener('click', () => window.print());
  });
})();
