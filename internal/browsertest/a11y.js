// The accessibility basics, checked in one pass over the page as it is drawn
// now. It runs after page.js and returns the problems as
// [{rule, element, detail}]. Elements that are not drawn (display: none,
// visibility: hidden, hidden, no box) are not checked; aria-hidden ones are
// left out of the rules about names but not out of contrast.
const problems = [];
const add = (rule, el, detail) => problems.push({ rule, element: describe(el), detail });

// lang: the page says its language, for screen readers and hyphenation.
if (!norm(document.documentElement.getAttribute('lang'))) {
  add('lang', document.documentElement, '<html> has no lang attribute');
}

// label: every form control a person fills has a label.
for (const el of document.querySelectorAll('input, select, textarea')) {
  const type = (el.getAttribute('type') || '').toLowerCase();
  if (el.tagName === 'INPUT' && ['hidden', 'submit', 'button', 'reset', 'image'].includes(type)) continue;
  if (!exposed(el) || labelOf(el)) continue;
  add('label', el, 'has no label: no <label for=id>, no wrapping <label>, no aria-label (or they are empty)');
}

// h1, heading-order: one <h1>, and going down the levels one step at a time.
const headings = [...document.querySelectorAll('h1, h2, h3, h4, h5, h6')].filter(exposed);
const h1s = headings.filter((h) => h.tagName === 'H1');
if (h1s.length === 0) add('h1', document.body, 'the page has no <h1>');
for (const h of h1s.slice(1)) add('h1', h, 'is a second <h1>; the first is ' + describe(h1s[0]));
for (let i = 1; i < headings.length; i++) {
  const prev = Number(headings[i - 1].tagName[1]);
  const cur = Number(headings[i].tagName[1]);
  if (cur > prev + 1) add('heading-order', headings[i], 'follows ' + describe(headings[i - 1]) + ', skipping <h' + (prev + 1) + '>');
}

// img-alt: every image says what it shows, or alt="" if it shows nothing.
for (const img of document.querySelectorAll('img')) {
  if (shown(img) && !img.hasAttribute('alt')) add('img-alt', img, 'has no alt attribute (alt="" if it is decoration)');
}

// name: every button and link says what it does.
const nameOf = (el) => {
  const label = labelOf(el);
  if (label) return label;
  if (el.tagName === 'INPUT') {
    const type = (el.getAttribute('type') || '').toLowerCase();
    if (type === 'image') return norm(el.getAttribute('alt'));
    if (type === 'submit' || type === 'reset') return el.hasAttribute('value') ? norm(el.value) : type;
    return norm(el.value);
  }
  const text = norm(el.innerText);
  if (text) return text;
  const alts = [...el.querySelectorAll('img[alt], svg title')].map((e) => e.getAttribute('alt') || e.textContent);
  return norm(alts.join(' ')) || norm(el.getAttribute('title'));
};
const actions = 'button, a[href], [role="button"], [role="link"], input[type="submit"], input[type="button"], input[type="reset"], input[type="image"]';
for (const el of document.querySelectorAll(actions)) {
  if (exposed(el) && !nameOf(el)) add('name', el, 'has no accessible name: no text, no aria-label');
}

// contrast: WCAG 2 contrast of text against what is behind it, 4.5:1, or 3:1
// for large text (24px, or 18.66px bold). The background is the first
// ancestor's opaque background-color, with any translucent ones in between
// laid over it, on white. Text over a background image is not judged.
const canvas = document.createElement('canvas');
canvas.width = canvas.height = 1;
const paint = canvas.getContext('2d', { willReadFrequently: true });
const colors = new Map();
// rgba reads any CSS color as [r, g, b, a] (0-255, alpha 0-1) by painting it.
const rgba = (css) => {
  if (!colors.has(css)) {
    paint.clearRect(0, 0, 1, 1);
    paint.fillStyle = 'rgba(0, 0, 0, 0)';
    paint.fillStyle = css;
    paint.fillRect(0, 0, 1, 1);
    const d = paint.getImageData(0, 0, 1, 1).data;
    colors.set(css, [d[0], d[1], d[2], d[3] / 255]);
  }
  return colors.get(css);
};
const over = (top, under) => {
  const a = top[3];
  return [0, 1, 2].map((i) => top[i] * a + under[i] * (1 - a)).concat(1);
};
const background = (el) => {
  const layers = [];
  for (let e = el; e; e = e.parentElement) {
    const style = getComputedStyle(e);
    if (style.backgroundImage !== 'none') return null;
    const c = rgba(style.backgroundColor);
    if (c[3] > 0) layers.push(c);
    if (c[3] >= 1) break;
  }
  return layers.reduceRight((under, top) => over(top, under), [255, 255, 255, 1]);
};
const luminance = (c) => {
  const [r, g, b] = c.slice(0, 3).map((v) => {
    v /= 255;
    return v <= 0.04045 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
};
const ratio = (a, b) => {
  const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
  return (hi + 0.05) / (lo + 0.05);
};
const css = (c) => 'rgb(' + c.slice(0, 3).map(Math.round).join(', ') + ')';
const skip = new Set(['SCRIPT', 'STYLE', 'NOSCRIPT', 'TEMPLATE', 'OPTION', 'OPTGROUP']);
for (const el of document.body ? document.body.querySelectorAll('*') : []) {
  if (skip.has(el.tagName)) continue;
  const own = [...el.childNodes].some((n) => n.nodeType === Node.TEXT_NODE && norm(n.textContent));
  if (!own || !shown(el) || el.closest(':disabled')) continue;
  const bg = background(el);
  if (!bg) continue;
  const style = getComputedStyle(el);
  const fg = over(rgba(style.color), bg);
  const size = parseFloat(style.fontSize);
  const bold = Number(style.fontWeight) >= 700;
  const need = size >= 24 || (size >= 18.66 && bold) ? 3 : 4.5;
  const got = ratio(fg, bg);
  if (got < need) {
    add('contrast', el, 'contrast ' + got.toFixed(2) + ':1 is below ' + need + ':1 (' + css(fg) + ' on ' + css(bg) + ', ' + size + 'px' + (bold ? ' bold' : '') + ')');
  }
}
return problems;
