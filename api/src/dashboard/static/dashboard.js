// Orderly queue dashboard: live updates, confirmation dialogs, keyboard shortcuts.
// The pages work without this file (the server asks for confirmation itself); it only makes
// them live and quicker to use. No dependencies, no inline script (the CSP forbids it).
(function () {
  'use strict';

  var POLL_MS = 3000;
  var RETRY_MAX_MS = 30000;
  var live = document.getElementById('live');
  var toggle = document.getElementById('live-toggle');
  var status = document.getElementById('live-status');
  var dialog = document.getElementById('confirm-dialog');
  var paused = window.sessionStorage.getItem('orderly-live') === 'off';
  var streaming = typeof window.EventSource === 'function';
  var source = null;
  var held = null; // a fragment that arrived while a confirmation was open
  var retryMs = 0;
  var retryTimer = null;
  var inFlight = false;
  var pendingForm = null;

  function say(text) {
    if (status) status.textContent = text;
  }

  function sessionEnded(response) {
    return response.redirected || response.status === 401 || response.status === 403;
  }

  // Swaps the live part in; focus stays on the element it was on (by data-key).
  function apply(html) {
    var active = document.activeElement;
    var key = active && live.contains(active) ? active.getAttribute('data-key') : null;
    live.innerHTML = html; // our own auto-escaped template output, same origin
    if (key) {
      var again = live.querySelector('[data-key="' + window.CSS.escape(key) + '"]');
      if (again) again.focus();
    }
  }

  function wanted() {
    return live && !paused && !document.hidden;
  }

  // Whether `html` shows what the page shows already (the "Read at" line aside): the stream's
  // first fragment usually does, and swapping it in would only disturb the page.
  function shownAlready(html) {
    var next = document.createElement('div');
    next.innerHTML = html;
    var shown = live.cloneNode(true);
    [next, shown].forEach(function (root) {
      var readAt = root.querySelector('p.updated');
      if (readAt) readAt.remove();
    });
    return next.innerHTML.trim() === shown.innerHTML.trim();
  }

  // One Server-Sent Events stream per page: the server sends the live part whenever it changes.
  function open() {
    if (source || retryTimer || !wanted()) return;
    var first = true;
    source = new window.EventSource('/admin/live?page=' + encodeURIComponent(live.getAttribute('data-live-url')));
    source.addEventListener('open', function () {
      retryMs = 0;
      say('live');
    });
    source.addEventListener('fragment', function (event) {
      if (first) {
        first = false;
        if (shownAlready(event.data)) return;
      }
      if (dialog && dialog.open) {
        held = event.data; // swapping now would detach the form being confirmed
        return;
      }
      apply(event.data);
      say('live');
    });
    source.addEventListener('failed', function (event) {
      say('update failed (HTTP ' + event.data + '), retrying');
    });
    source.addEventListener('error', function () {
      if (source && source.readyState === window.EventSource.CONNECTING) {
        say('reconnecting\u2026'); // the browser reconnects by itself
        return;
      }
      close();
      check();
    });
  }

  function close() {
    if (source) source.close();
    source = null;
    window.clearTimeout(retryTimer);
    retryTimer = null;
  }

  // The stream was refused. One request for the page's live part says why: the session ended
  // (reload: the page load shows the login form) or the server is unwell (try again later).
  function check() {
    fetch(live.getAttribute('data-live-url'), { credentials: 'same-origin', cache: 'no-store' })
      .then(function (response) {
        if (sessionEnded(response)) {
          window.location.reload();
          return;
        }
        say(response.ok ? 'reconnecting\u2026' : 'update failed (HTTP ' + response.status + '), retrying');
        later();
      })
      .catch(function () {
        say('connection lost, retrying');
        later();
      });
  }

  function later() {
    retryMs = Math.min(retryMs ? retryMs * 2 : 1000, RETRY_MAX_MS);
    retryTimer = window.setTimeout(function () {
      retryTimer = null;
      open();
    }, retryMs);
  }

  // Without EventSource: short polling of the same live part. Skipped while the tab is hidden
  // or a confirmation is open.
  function refresh() {
    if (!wanted() || inFlight || (dialog && dialog.open)) return;
    inFlight = true;
    fetch(live.getAttribute('data-live-url'), { credentials: 'same-origin', cache: 'no-store' })
      .then(function (response) {
        if (sessionEnded(response)) {
          window.location.reload(); // session ended: the page load shows the login form
          return null;
        }
        if (!response.ok) {
          say('update failed (HTTP ' + response.status + '), retrying');
          return null;
        }
        return response.text();
      })
      .then(function (html) {
        if (html === null || html === undefined) return;
        apply(html);
        say('updated ' + new Date().toLocaleTimeString());
      })
      .catch(function () {
        say('connection lost, retrying');
      })
      .then(function () {
        inFlight = false;
      });
  }

  // Streams follow the toggle and the tab: closed while paused or hidden, opened again after.
  function follow() {
    if (!streaming) {
      refresh();
    } else if (wanted()) {
      open();
    } else {
      close();
    }
    if (live && !paused && document.hidden) say('paused');
  }

  function showLiveState() {
    if (!toggle) return;
    toggle.hidden = !live;
    toggle.setAttribute('aria-pressed', String(!paused));
    toggle.textContent = paused ? 'Live updates off' : 'Live updates on';
    if (paused) say('paused');
  }

  if (toggle) {
    toggle.addEventListener('click', function () {
      paused = !paused;
      window.sessionStorage.setItem('orderly-live', paused ? 'off' : 'on');
      showLiveState();
      follow();
    });
  }
  showLiveState();
  if (live) {
    if (!streaming) window.setInterval(refresh, POLL_MS);
    document.addEventListener('visibilitychange', follow);
    follow();
  }

  // Every action form carries data-confirm: ask in a modal dialog (Cancel has the focus, Escape
  // cancels), then post with confirmed=yes. Without dialog support the server asks instead.
  document.addEventListener('submit', function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute('data-confirm')) return;
    if (!dialog || typeof dialog.showModal !== 'function') return;
    event.preventDefault();
    pendingForm = form;
    var button = form.querySelector('button');
    var ok = document.getElementById('confirm-ok');
    document.getElementById('confirm-question').textContent = form.getAttribute('data-confirm');
    ok.textContent = button ? button.textContent.trim() : 'Confirm';
    ok.className = button && button.classList.contains('danger') ? 'danger' : 'primary';
    dialog.returnValue = '';
    dialog.showModal();
    document.getElementById('confirm-cancel').focus();
  });

  if (dialog) {
    dialog.addEventListener('close', function () {
      var form = pendingForm;
      pendingForm = null;
      if (!form || dialog.returnValue !== 'confirm') {
        if (held !== null) apply(held);
        held = null;
        return;
      }
      var confirmed = document.createElement('input');
      confirmed.type = 'hidden';
      confirmed.name = 'confirmed';
      confirmed.value = 'yes';
      form.appendChild(confirmed);
      form.submit();
    });
  }

  // "/" jumps to the job search, as in most consoles.
  document.addEventListener('keydown', function (event) {
    var target = event.target;
    var typing = target && (target.tagName === 'INPUT' || target.tagName === 'TEXTAREA' || target.isContentEditable);
    if (event.key === '/' && !typing && !event.ctrlKey && !event.metaKey && !event.altKey) {
      var search = document.getElementById('search-id');
      if (search) {
        event.preventDefault();
        search.focus();
      }
    }
  });
})();
