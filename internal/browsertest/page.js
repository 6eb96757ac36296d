// Helpers that every snippet of browsertest runs with: page.go puts them at
// the top of a function body, so they add no globals to the page under test.

// norm collapses white space, as a person reads text.
const norm = (s) => (s || '').replace(/\s+/g, ' ').trim();

// short is text cut to a length that fits in a failure message.
const short = (s, n = 40) => {
  s = norm(s);
  return s.length > n ? s.slice(0, n - 1) + '…' : s;
};

// selector is an element's tag with its id, or its name or classes.
const selector = (el) => {
  let d = el.tagName.toLowerCase();
  if (el.id) d += '#' + el.id;
  if (el.tagName === 'INPUT') d += '[type=' + (el.getAttribute('type') || 'text') + ']';
  if (!el.id && el.getAttribute('name')) d += '[name=' + el.getAttribute('name') + ']';
  if (!el.id && el.classList.length) d += '.' + [...el.classList].slice(0, 2).join('.');
  return d;
};

// describe names an element so that a person finds it in the template:
// its selector, and its text or address.
const describe = (el) => {
  if (!el || !el.tagName) return String(el);
  const what = ['HTML', 'BODY', 'SELECT', 'TEXTAREA'].includes(el.tagName) ? '' :
    short(el.innerText) || el.getAttribute('src') || el.getAttribute('href') || '';
  return what ? selector(el) + ' "' + short(what) + '"' : selector(el);
};

// shown is whether an element is drawn: it has a box and is not hidden.
const shown = (el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden';

// exposed is whether an element is drawn and in the accessibility tree.
const exposed = (el) => shown(el) && !el.closest('[aria-hidden="true"]');

// ownText is the text of a label without the text of the controls in it (a
// wrapped <select> would otherwise add every option's text).
const ownText = (label) => {
  const copy = label.cloneNode(true);
  copy.querySelectorAll('input, select, textarea').forEach((c) => c.remove());
  return norm(copy.textContent);
};

// labelOf is the accessible label of a form control: aria-labelledby,
// aria-label, or the text of its <label> elements (for=id or wrapping).
const labelOf = (el) => {
  const ids = norm(el.getAttribute('aria-labelledby'));
  if (ids) {
    const t = norm(ids.split(' ').map((id) => document.getElementById(id)).filter(Boolean).map((e) => e.textContent).join(' '));
    if (t) return t;
  }
  const aria = norm(el.getAttribute('aria-label'));
  if (aria) return aria;
  return norm([...(el.labels || [])].map(ownText).join(' '));
};

// byLabel is the form control whose label reads text (a trailing ':' or '*'
// is ignored on both sides), or null.
const byLabel = (text) => {
  const want = norm(text).replace(/\s*[:*]$/, '');
  for (const el of document.querySelectorAll('input, select, textarea')) {
    if (el.type === 'hidden') continue;
    if (labelOf(el).replace(/\s*[:*]$/, '') === want) return el;
  }
  return null;
};

// find is the element a locator names: {css: selector} or {label: text}.
const find = (loc) => (loc.css !== undefined ? document.querySelector(loc.css) : byLabel(loc.label));

// pageText is the start of what the page reads, for failure messages.
const pageText = () => short(document.body ? document.body.innerText : '', 400);
