// Keyboard-first review: every action has a key, shown on the page.
(function () {
  const csrf = (document.getElementById('csrf') || {}).value || '';
  const click = id => { const el = document.getElementById(id); if (el) el.click(); };
  const go = id => { const el = document.getElementById(id); if (el) window.location.href = el.href; };
  const typing = e => ['INPUT', 'SELECT', 'TEXTAREA'].includes(e.target.tagName);

  // A flagged image is blurred by the server until revealed: tell it, then fetch the image again.
  function reveal(img, note) {
    const hide = !img.dataset.shown;
    const body = new URLSearchParams({ csrf: csrf, sample_id: img.dataset.sample });
    if (!hide) body.set('hide', '1');
    fetch('/reveal', { method: 'POST', body: body, credentials: 'same-origin' }).then(r => {
      if (!r.ok) return;
      const base = img.src.split('?')[0];
      img.src = base + '?v=' + Date.now();
      if (hide) img.dataset.shown = '1'; else delete img.dataset.shown;
      if (note) note.textContent = hide ? 'shown: press v to blur' : 'blurred: press v to show';
    });
  }

  const grid = document.getElementById('grid');
  if (grid) {
    const cells = Array.from(grid.querySelectorAll('.cell'));
    const reasons = grid.dataset.reasons.split('|');
    let at = 0;
    let reason = 0;
    const cols = () => Math.max(1, Math.round(grid.clientWidth / (cells[0] ? cells[0].offsetWidth : 1)));
    const focus = i => {
      cells[at].classList.remove('focused');
      at = Math.min(cells.length - 1, Math.max(0, i));
      cells[at].classList.add('focused');
      cells[at].scrollIntoView({ block: 'nearest' });
    };
    const mark = (i, r) => {
      const v = cells[i].querySelector('.verdict');
      v.value = r === null ? 'accept' : reasons[r];
      cells[i].classList.toggle('rejected', r !== null);
      cells[i].querySelector('.cell-verdict').textContent = r === null ? 'accept' : 'reject: ' + reasons[r];
    };
    document.addEventListener('keydown', e => {
      if (e.ctrlKey || e.metaKey || e.altKey || typing(e)) return;
      const k = e.key;
      if (k === 'ArrowRight' || k === 'l') focus(at + 1);
      else if (k === 'ArrowLeft' || k === 'h') focus(at - 1);
      else if (k === 'ArrowDown' || k === 'j') focus(at + cols());
      else if (k === 'ArrowUp' || k === 'k') focus(at - cols());
      else if (k === 'x') mark(at, cells[at].querySelector('.verdict').value === 'accept' ? reason : null);
      else if (/^[1-9]$/.test(k) && Number(k) <= reasons.length) { reason = Number(k) - 1; mark(at, reason); }
      else if (k === 'v') { const img = cells[at].querySelector('img'); if (img.dataset.veiled) reveal(img, null); }
      else if (k === 'Enter') { e.preventDefault(); click('submit-page'); }
      else return;
      e.preventDefault();
    });
    return;
  }

  const form = document.getElementById('decide');
  const edit = document.getElementById('edit');
  const reason = document.getElementById('reason');
  if (edit) {
    edit.addEventListener('keydown', e => {
      if (e.key === 'Enter') { e.preventDefault(); click('accept'); }
      if (e.key === 'Escape') { e.preventDefault(); edit.blur(); }
    });
  }
  document.addEventListener('keydown', e => {
    if (e.ctrlKey || e.metaKey || e.altKey || typing(e)) return;
    if (form && e.key === 'a') click('accept');
    else if (form && e.key === 'r') click('reject');
    else if (form && e.key === 'e') { e.preventDefault(); edit.focus(); edit.value = edit.value || edit.placeholder; }
    else if (form && /^[1-9]$/.test(e.key) && reason && Number(e.key) <= reason.options.length) {
      reason.selectedIndex = Number(e.key) - 1; click('reject');
    }
    else if (!form && document.getElementById('judge') && ['1', '2', '0'].includes(e.key)) {
      click({ '1': 'left', '2': 'right', '0': 'tie' }[e.key]);
    }
    else if (e.key === 'v' && document.getElementById('veil-note')) {
      reveal(document.getElementById('image'), document.getElementById('veil-note'));
    }
    else if (form && e.key === 's') click('skip');
    else if (form && e.key === 'c') { e.preventDefault(); document.getElementById('comment').focus(); }
    else if (e.key === 'g') window.location.href = '/grid';
    else if (e.key === 'u') click('undo');
    else if (e.key === 'n') go('next');
    else if (e.key === 'p') go('prev');
  });
})();
