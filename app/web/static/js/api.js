// Calls to the JSON API from our pages: the session cookie authenticates them, and the page's
// CSRF token (from its meta tag) goes in the X-CSRF-Token header of every call that changes data.
"use strict";

window.visioncraftApi = (() => {
  const csrfToken = () => {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  };

  // Resolve to {ok, status, body}, where body is the JSON response or the problem details. A network
  // failure resolves with status 0, so callers handle every outcome in one place.
  const call = async (method, path, body) => {
    const headers = { Accept: "application/json", "X-CSRF-Token": csrfToken() };
    const options = { method, headers, credentials: "same-origin" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, options);
    } catch {
      return { ok: false, status: 0, body: {} };
    }
    let parsed = {};
    try {
      parsed = await response.json();
    } catch {
      parsed = { title: `${response.status} ${response.statusText}` };
    }
    return { ok: response.ok, status: response.status, body: parsed };
  };

  // Fill {name} placeholders of a translated message.
  const format = (message, values) =>
    message.replace(/\{(\w+)\}/g, (whole, name) => (name in values ? String(values[name]) : whole));

  const element = (tag, className, text) => {
    const node = document.createElement(tag);
    if (className) {
      node.className = className;
    }
    if (text !== undefined) {
      node.textContent = text;
    }
    return node;
  };

  // Show a failed call in an alert box: the problem's title, detail and request id.
  const showProblem = (box, result, messages) => {
    box.replaceChildren();
    if (result.status === 0) {
      box.append(element("p", "", messages.messageNetwork));
    } else {
      box.append(element("p", "", messages.messageFailed));
      const problem = result.body || {};
      if (problem.title) {
        box.append(element("p", "", problem.title));
      }
      if (problem.detail) {
        box.append(element("p", "", problem.detail));
      }
      if (problem.request_id) {
        box.append(element("p", "hint", problem.request_id));
      }
    }
    box.hidden = false;
    box.focus();
  };

  return { call, csrfToken, format, element, showProblem };
})();
