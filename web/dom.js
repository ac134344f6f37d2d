// DOM helpers for the dashboard: h() builds elements from tags, attributes and children.

export const $ = (s, r = document) => r.querySelector(s);

// h('a', { href, class, onclick }, ...children): `on*` attributes add listeners, `class` sets the
// class name, `html` sets innerHTML; null, false and undefined children (and attributes) are skipped.
export function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'html') el.innerHTML = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const k of kids.flat(Infinity)) if (k != null && k !== false) el.append(k instanceof Node ? k : String(k));
  return el;
}

// Appends children to `el`, skipping null and false (Element.append would write "null").
export function add(el, ...kids) {
  for (const k of kids.flat(Infinity)) if (k != null && k !== false) el.append(k instanceof Node ? k : String(k));
  return el;
}

// Replaces el's children, skipping null and false like add().
export function fill(el, ...kids) { el.replaceChildren(); return add(el, ...kids); }
