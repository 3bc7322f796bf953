// The generator page: sends the form as JSON to the demo generation route, shows progress,
// then the images or the server's problem details (RFC 9457).
"use strict";

(() => {
  const form = document.getElementById("generator-form");
  if (!form) {
    return;
  }
  const button = document.getElementById("generate-button");
  const status = document.getElementById("generator-status");
  const errorBox = document.getElementById("generator-error");
  const results = document.getElementById("generator-results");
  const summary = document.getElementById("results-summary");
  const gallery = document.getElementById("gallery");
  const messages = form.dataset;
  const { format, csrfToken, element } = window.visioncraftApi;

  const requestBody = () => {
    const data = new FormData(form);
    const body = {
      prompt: String(data.get("prompt") || ""),
      n: Number(data.get("n") || 1),
      aspect_ratio: String(data.get("aspect_ratio") || "1:1"),
      response_format: "url",
    };
    const negative = String(data.get("negative_prompt") || "").trim();
    if (negative) {
      body.negative_prompt = negative;
    }
    const style = String(data.get("style") || "");
    if (style) {
      body.style = style;
    }
    return body;
  };

  const setBusy = (busy) => {
    status.hidden = !busy;
    button.disabled = busy;
    form.setAttribute("aria-busy", String(busy));
  };

  const showProblem = (problem, retryAfter) => {
    errorBox.replaceChildren();
    errorBox.append(element("p", "", messages.messageFailed));

    const heading = element("p");
    heading.append(element("strong", "", problem.title || ""));
    errorBox.append(heading);
    if (problem.detail) {
      errorBox.append(element("p", "", problem.detail));
    }
    if (Array.isArray(problem.errors) && problem.errors.length > 0) {
      const list = element("ul");
      for (const item of problem.errors) {
        list.append(element("li", "", item.field ? `${item.field}: ${item.message}` : item.message));
      }
      errorBox.append(list);
    }
    if (retryAfter) {
      errorBox.append(element("p", "", format(messages.messageRetry, { seconds: retryAfter })));
    }

    const footer = element("p", "hint");
    if (problem.type && /^https?:\/\//.test(problem.type)) {
      const link = element("a", "", messages.messageMore);
      link.href = problem.type;
      footer.append(link);
    }
    if (problem.request_id) {
      footer.append(document.createTextNode(` ${messages.messageRequestId}: ${problem.request_id}`));
    }
    errorBox.append(footer);
    errorBox.hidden = false;
    errorBox.focus();
  };

  const showImages = (payload, prompt) => {
    gallery.replaceChildren();
    payload.data.forEach((image, index) => {
      const item = element("li");
      const figure = element("figure");
      const picture = element("img");
      picture.src = image.url;
      picture.alt = format(messages.messageImage, { number: index + 1, prompt });
      picture.width = image.width;
      picture.height = image.height;
      const caption = element("figcaption");
      const download = element("a", "button button-small", messages.messageDownload);
      download.href = image.url;
      download.download = `${image.id}.png`;
      caption.append(download);
      figure.append(picture, caption);
      item.append(figure);
      gallery.append(item);
    });
    const count = payload.data.length;
    summary.textContent = format(count === 1 ? messages.messageDoneOne : messages.messageDoneOther, {
      count,
    });
    results.hidden = false;
  };

  const readProblem = async (response) => {
    try {
      return await response.json();
    } catch {
      return { title: `${response.status} ${response.statusText}` };
    }
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!form.reportValidity()) {
      return;
    }
    const body = requestBody();
    errorBox.hidden = true;
    setBusy(true);
    try {
      const response = await fetch(messages.endpoint, {
        method: "POST",
        headers: {
          "Content-Type": "application/json",
          Accept: "application/json",
          "X-CSRF-Token": csrfToken(),
        },
        credentials: "same-origin",
        body: JSON.stringify(body),
      });
      if (response.ok) {
        showImages(await response.json(), body.prompt);
      } else {
        showProblem(await readProblem(response), response.headers.get("Retry-After"));
      }
    } catch {
      showProblem({ title: messages.messageNetwork });
    } finally {
      setBusy(false);
    }
  });
})();
