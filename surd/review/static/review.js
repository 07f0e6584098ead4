// Keyboard-first review: every action has a key, shown on the page.
(function () {
  const form = document.getElementById('decide');
  const edit = document.getElementById('edit');
  const reason = document.getElementById('reason');
  const click = id => { const el = document.getElementById(id); if (el) el.click(); };
  const go = id => { const el = document.getElementById(id); if (el) window.location.href = el.href; };
  if (edit) {
    edit.addEventListener('keydown', e => {
      if (e.key === 'Enter') { e.preventDefault(); click('accept'); }
      if (e.key === 'Escape') { e.preventDefault(); edit.blur(); }
    });
  }
  document.addEventListener('keydown', e => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const tag = e.target.tagName;
    if (tag === 'INPUT' || tag === 'SELECT' || tag === 'TEXTAREA') return;
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
      const img = document.getElementById('image');
      img.classList.toggle('veiled');
      document.getElementById('veil-note').textContent = img.classList.contains('veiled') ? 'blurred: press v to show' : 'shown: press v to blur';
    }
    else if (e.key === 'u') click('undo');
    else if (e.key === 'n') go('next');
    else if (e.key === 'p') go('prev');
  });
})();
