// Form fields and the server's 400s: a refusal's message goes next to the field its `param`
// names (data-param, exactly or as a prefix: `filters.languages[1]` lands on
// `filters.languages`), else into the form's callout.
import { h } from './dom.js';

export function field(name, label, input, param, help) {
  return h('label', { 'data-param': param }, label, input, help ? h('span', { class: 'help' }, help) : null, h('span', { class: 'field-error', hidden: true }));
}

export function clearFormErrors(form, callout) {
  callout.hidden = true;
  form.querySelectorAll('[data-param]').forEach((el) => { el.classList.remove('invalid'); const e = el.querySelector(':scope > .field-error'); if (e) e.hidden = true; });
}

export function showFormError(form, callout, err, what) {
  const param = err.param;
  const fields = [...form.querySelectorAll('[data-param]')];
  const target = param && (fields.find((el) => el.dataset.param === param)
    || fields.find((el) => param.startsWith(el.dataset.param + '.') || param.startsWith(el.dataset.param + '[')));
  if (target) {
    target.classList.add('invalid');
    const e = target.querySelector(':scope > .field-error'); e.textContent = err.message; e.hidden = false;
    target.scrollIntoView({ block: 'center', behavior: 'smooth' });
  } else {
    callout.replaceChildren(h('strong', {}, `${what} `), err.message, param ? h('span', { class: 'muted' }, ` (${param})`) : '');
    callout.hidden = false;
  }
}
