// Wharf debug view: follows one X-Debug-ID tag live, and opens a tag from the tag list.
// Every value that came from a client goes into the page through textContent or a data
// attribute, never parsed as HTML, so a document cannot add markup or script to the page.
'use strict';

(function () {
  const TAG = /^[A-Za-z0-9-]{1,20}$/;
  const POLL_MS = 1000;
  const MAX_CARDS = 500;

  function el(name, className, text) {
    const node = document.createElement(name);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // The tag list: "Watch a tag" opens that tag's page.
  const open = document.getElementById('open-tag');
  if (open) {
    open.addEventListener('submit', function (event) {
      event.preventDefault();
      const tag = String(open.elements.tag.value || '').trim();
      if (TAG.test(tag)) window.location.assign('/debug/' + encodeURIComponent(tag));
    });
  }

  const tag = document.body.dataset.tag;
  if (!tag) return;

  const docs = document.getElementById('docs');
  const status = document.getElementById('status');
  const count = document.getElementById('count');
  const pause = document.getElementById('pause');
  const empty = document.getElementById('empty');
  const baseTitle = document.title;
  let after = '';
  let paused = false;
  let stopped = false;
  let timer = null;
  let received = 0;

  function setStatus(state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }

  function pad(n, width) {
    return String(n).padStart(width, '0');
  }

  function clock(ms) {
    const t = new Date(ms);
    if (Number.isNaN(t.getTime())) return '';
    return pad(t.getHours(), 2) + ':' + pad(t.getMinutes(), 2) + ':' + pad(t.getSeconds(), 2) +
      '.' + pad(t.getMilliseconds(), 3);
  }

  function size(bytes) {
    if (bytes < 1024) return bytes + ' B';
    if (bytes < 1024 * 1024) return (bytes / 1024).toFixed(1) + ' KiB';
    return (bytes / 1024 / 1024).toFixed(1) + ' MiB';
  }

  function badge(text, kind) {
    return el('span', 'badge' + (kind ? ' badge-' + kind : ''), text);
  }

  function card(entry) {
    const body = entry.body || {};
    const node = el('article', 'doc fresh');
    node.dataset.docId = String(entry.doc_id || '');
    node.dataset.entryId = String(entry.id || '');

    const head = el('div', 'doc-head');
    const time = el('time', 'doc-time', clock(entry.received_ms));
    const when = new Date(entry.received_ms);
    if (!Number.isNaN(when.getTime())) {
      time.dateTime = when.toISOString();
      time.title = when.toISOString();
    }
    head.appendChild(time);
    const route = el('span', 'doc-route');
    [entry.namespace, entry.doc_type, entry.doc_version].forEach(function (part, i) {
      if (i > 0) route.appendChild(el('span', 'sep', '/'));
      route.appendChild(el('span', 'part', part));
    });
    head.appendChild(route);
    const badges = el('span', 'badges');
    badges.appendChild(badge(String(body.kind || 'text').toUpperCase(), body.kind));
    if (body.gzip) badges.appendChild(badge('gzip', 'gzip'));
    if (body.truncated) badges.appendChild(badge('truncated', 'truncated'));
    badges.appendChild(badge(size(Number(body.bytes) || 0), 'size'));
    head.appendChild(badges);
    node.appendChild(head);

    const id = el('div', 'doc-id');
    id.appendChild(el('span', 'label', 'docId'));
    id.appendChild(el('code', null, entry.doc_id));
    node.appendChild(id);

    const main = el('div', 'doc-main');
    const pre = el('pre', 'body', body.text === '' ? '(empty body)' : body.text);
    if (body.text === '') pre.classList.add('empty-body');
    main.appendChild(pre);

    const attributes = entry.attributes || {};
    const names = Object.keys(attributes).sort();
    const table = el('table', 'attrs');
    const caption = el('caption', null, 'Attributes');
    table.appendChild(caption);
    const rows = el('tbody');
    names.forEach(function (name) {
      const row = el('tr');
      row.appendChild(el('th', null, name));
      row.appendChild(el('td', null, attributes[name]));
      rows.appendChild(row);
    });
    table.appendChild(rows);
    main.appendChild(table);
    node.appendChild(main);
    return node;
  }

  function show(entries) {
    for (const entry of entries) {
      docs.insertBefore(card(entry), docs.firstChild);
      after = String(entry.id || after);
      received += 1;
    }
    while (docs.childElementCount > MAX_CARDS) docs.removeChild(docs.lastElementChild);
    if (received > 0) empty.hidden = true;
    count.textContent = received + (received === 1 ? ' document' : ' documents');
    document.title = (received > 0 ? '(' + received + ') ' : '') + baseTitle;
  }

  function signedOut() {
    stopped = true;
    setStatus('signed-out', 'signed out');
    pause.disabled = true;
    empty.hidden = false;
    empty.textContent = 'Your session has ended. ';
    const link = el('a', null, 'Sign in again');
    link.href = '/debug/login';
    empty.appendChild(link);
  }

  function schedule() {
    if (!paused && !stopped && timer === null) timer = window.setTimeout(poll, POLL_MS);
  }

  async function poll() {
    timer = null;
    if (paused || stopped) return;
    let url = '/debug/' + encodeURIComponent(tag) + '/entries';
    if (after) url += '?after=' + encodeURIComponent(after);
    try {
      const response = await fetch(url, {
        credentials: 'same-origin',
        cache: 'no-store',
        headers: { Accept: 'application/json' },
      });
      if (response.status === 401) {
        signedOut();
        return;
      }
      if (!response.ok) throw new Error('HTTP ' + response.status);
      const data = await response.json();
      show(Array.isArray(data.entries) ? data.entries : []);
      if (!paused) setStatus('live', 'live');
    } catch (error) {
      if (!paused) setStatus('error', 'reconnecting');
    }
    schedule();
  }

  pause.addEventListener('click', function () {
    paused = !paused;
    pause.textContent = paused ? 'Resume' : 'Pause';
    if (paused) {
      if (timer !== null) window.clearTimeout(timer);
      timer = null;
      setStatus('paused', 'paused');
    } else {
      setStatus('connecting', 'connecting');
      poll();
    }
  });

  poll();
})();
