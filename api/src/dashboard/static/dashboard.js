// Orderly queue dashboard: live updates, confirmation dialogs, job selection for bulk actions,
// keyboard shortcuts.
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
  var pendingSubmitter = null;

  function say(text) {
    if (status) status.textContent = text;
  }

  function sessionEnded(response) {
    return response.redirected || response.status === 401 || response.status === 403;
  }

  // Swaps the live part in; focus stays on the element it was on (by data-key), and ticked
  // jobs stay ticked.
  function apply(html) {
    var active = document.activeElement;
    var key = active && live.contains(active) ? active.getAttribute('data-key') : null;
    var ticked = [];
    live.querySelectorAll('input[type="checkbox"][data-key]').forEach(function (box) {
      if (box.checked) ticked.push(box.getAttribute('data-key'));
    });
    live.innerHTML = html; // our own auto-escaped template output, same origin
    ticked.forEach(function (tick) {
      var box = live.querySelector('input[type="checkbox"][data-key="' + window.CSS.escape(tick) + '"]');
      if (box) box.checked = true;
    });
    showSelection();
    if (key) {
      var again = live.querySelector('[data-key="' + window.CSS.escape(key) + '"]');
      if (again) again.focus();
    }
  }

  // Whether swapping now would disturb the operator: a confirmation is open, or they are typing
  // in a field of the live part (the filter). The fragment is kept and swapped in afterwards.
  function busy() {
    if (dialog && dialog.open) return true;
    var active = document.activeElement;
    return !!(live && active && live.contains(active) && active.tagName === 'INPUT' && active.type !== 'checkbox');
  }

  // The jobs ticked for a bulk action: the count beside the buttons, the buttons that need a
  // selection enabled only with one, the "all" box in step.
  function ticked() {
    return document.querySelectorAll('input[type="checkbox"][name="ids"]:checked').length;
  }

  function showSelection() {
    var boxes = document.querySelectorAll('input[type="checkbox"][name="ids"]');
    var n = ticked();
    var all = document.getElementById('select-all');
    if (all) {
      all.hidden = boxes.length === 0;
      all.checked = boxes.length > 0 && n === boxes.length;
      all.indeterminate = n > 0 && n < boxes.length;
    }
    var count = document.getElementById('bulk-count');
    if (count) count.textContent = n ? n + ' selected' : '';
    document.querySelectorAll('button[data-needs-selection]').forEach(function (button) {
      button.disabled = n === 0;
    });
  }

  document.addEventListener('change', function (event) {
    var target = event.target;
    if (!(target instanceof HTMLInputElement) || target.type !== 'checkbox') return;
    if (target.id === 'select-all') {
      document.querySelectorAll('input[type="checkbox"][name="ids"]').forEach(function (box) {
        box.checked = target.checked;
      });
    }
    if (target.id === 'select-all' || target.name === 'ids') showSelection();
  });

  document.addEventListener('focusout', function () {
    // After the focus moved on: swap in what arrived while the operator typed.
    window.setTimeout(function () {
      if (held !== null && !busy()) {
        apply(held);
        held = null;
      }
    }, 0);
  });

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
      if (busy()) {
        held = event.data; // swapping now would detach the form being confirmed or typed in
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
    if (!wanted() || inFlight || busy()) return;
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
  showSelection();
  if (live) {
    if (!streaming) window.setInterval(refresh, POLL_MS);
    document.addEventListener('visibilitychange', follow);
    follow();
  }

  // Every action form carries data-confirm (a form with several buttons may carry one per
  // button; `{n}` in it is the number of jobs ticked): ask in a modal dialog (Cancel has the
  // focus, Escape cancels), then post with confirmed=yes and the button's own field. Without
  // dialog support the server asks instead.
  document.addEventListener('submit', function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute('data-confirm')) return;
    if (!dialog || typeof dialog.showModal !== 'function') return;
    event.preventDefault();
    pendingForm = form;
    var submitter = event.submitter || null;
    pendingSubmitter = submitter;
    var button = submitter || form.querySelector('button');
    var ok = document.getElementById('confirm-ok');
    var question = (submitter && submitter.getAttribute('data-confirm')) || form.getAttribute('data-confirm');
    document.getElementById('confirm-question').textContent = question.replace('{n}', String(ticked()));
    ok.textContent = button ? button.textContent.trim() : 'Confirm';
    ok.className = button && button.classList.contains('danger') ? 'danger' : 'primary';
    dialog.returnValue = '';
    dialog.showModal();
    document.getElementById('confirm-cancel').focus();
  });

  if (dialog) {
    dialog.addEventListener('close', function () {
      var form = pendingForm;
      var submitter = pendingSubmitter;
      pendingForm = null;
      pendingSubmitter = null;
      if (!form || dialog.returnValue !== 'confirm') {
        if (held !== null && !busy()) {
          apply(held);
          held = null;
        }
        return;
      }
      var fields = [['confirmed', 'yes']];
      // form.submit() leaves out the button that was pressed: its name and value go along here.
      if (submitter && submitter.name) fields.push([submitter.name, submitter.value]);
      fields.forEach(function (pair) {
        var input = document.createElement('input');
        input.type = 'hidden';
        input.name = pair[0];
        input.value = pair[1];
        form.appendChild(input);
      });
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
