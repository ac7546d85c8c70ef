// Orderly queue dashboard: live updates, confirmation dialogs, keyboard shortcuts.
// The pages work without this file (the server asks for confirmation itself); it only makes
// them live and quicker to use. No dependencies, no inline script (the CSP forbids it).
(function () {
  'use strict';

  var POLL_MS = 3000;
  var live = document.getElementById('live');
  var toggle = document.getElementById('live-toggle');
  var status = document.getElementById('live-status');
  var dialog = document.getElementById('confirm-dialog');
  var paused = window.sessionStorage.getItem('orderly-live') === 'off';
  var inFlight = false;
  var pendingForm = null;

  function say(text) {
    if (status) status.textContent = text;
  }

  // Short polling: fetch the live part of this same page and swap it in. Skipped while the tab
  // is hidden or a confirmation is open; focus stays on the element it was on (by data-key).
  function refresh() {
    if (!live || paused || inFlight || document.hidden || (dialog && dialog.open)) return;
    inFlight = true;
    fetch(live.getAttribute('data-live-url'), { credentials: 'same-origin', cache: 'no-store' })
      .then(function (response) {
        if (response.redirected || response.status === 401 || response.status === 403) {
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
        var active = document.activeElement;
        var key = active && live.contains(active) ? active.getAttribute('data-key') : null;
        live.innerHTML = html; // our own auto-escaped template output, same origin
        if (key) {
          var again = live.querySelector('[data-key="' + window.CSS.escape(key) + '"]');
          if (again) again.focus();
        }
        say('updated ' + new Date().toLocaleTimeString());
      })
      .catch(function () {
        say('connection lost, retrying');
      })
      .then(function () {
        inFlight = false;
      });
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
      refresh();
    });
  }
  showLiveState();
  if (live) {
    window.setInterval(refresh, POLL_MS);
    document.addEventListener('visibilitychange', refresh);
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
      if (!form || dialog.returnValue !== 'confirm') return;
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
