// The dashboard: the usage chart, creating and revoking API keys, and billing actions.
"use strict";

(() => {
  const root = document.getElementById("dashboard");
  if (!root) {
    return;
  }
  const api = window.visioncraftApi;
  const messages = root.dataset;

  const drawUsage = () => {
    const data = JSON.parse(document.getElementById("usage-data").textContent);
    const canvas = document.getElementById("usage-chart");
    if (!window.Chart || !canvas) {
      return;
    }
    new window.Chart(canvas, {
      type: "bar",
      data: {
        labels: data.data.map((day) => day.date.slice(5)),
        datasets: [
          { label: messages.messageImages, data: data.data.map((day) => day.images) },
          { label: messages.messageCredits, data: data.data.map((day) => day.credits) },
        ],
      },
      options: {
        animation: false,
        maintainAspectRatio: false,
        scales: { y: { beginAtZero: true, ticks: { precision: 0 } } },
      },
    });
  };

  // API keys

  const keyForm = document.getElementById("key-form");
  const keyError = document.getElementById("key-error");
  const keysBody = document.getElementById("keys-body");
  const newKey = document.getElementById("new-key");
  const newKeyValue = document.getElementById("new-key-value");
  const copyStatus = document.getElementById("copy-status");
  const dialog = document.getElementById("revoke-dialog");
  let revoking = null;

  const day = (text) => (text ? text.slice(0, 10) : messages.messageNever);

  const renderKeys = (keys) => {
    keysBody.replaceChildren();
    for (const key of keys) {
      const row = api.element("tr");
      row.dataset.keyId = key.id;
      const code = api.element("code", "", key.redacted);
      const cells = [key.name, code, day(key.created_at), day(key.last_used_at)];
      cells.push(key.revoked_at ? messages.messageRevoked : messages.messageActive);
      for (const value of cells) {
        const cell = api.element("td");
        cell.append(value);
        row.append(cell);
      }
      const actions = api.element("td");
      if (!key.revoked_at) {
        const button = api.element("button", "button button-small button-secondary", messages.messageRevoke);
        button.type = "button";
        button.dataset.revoke = key.id;
        button.dataset.keyName = key.name;
        actions.append(button);
      }
      row.append(actions);
      keysBody.append(row);
    }
  };

  const reloadKeys = async () => {
    const result = await api.call("GET", "/api/v1/keys");
    if (result.ok) {
      renderKeys(result.body.data);
    }
  };

  keyForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!keyForm.reportValidity()) {
      return;
    }
    const data = new FormData(keyForm);
    keyError.hidden = true;
    const result = await api.call("POST", "/api/v1/keys", {
      name: String(data.get("name") || ""),
      mode: String(data.get("mode") || "live"),
    });
    if (!result.ok) {
      api.showProblem(keyError, result, messages);
      return;
    }
    newKeyValue.value = result.body.key;
    copyStatus.textContent = "";
    newKey.hidden = false;
    keyForm.reset();
    newKeyValue.focus();
    newKeyValue.select();
    await reloadKeys();
  });

  document.getElementById("copy-key").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(newKeyValue.value);
      copyStatus.textContent = messages.messageCopied;
    } catch {
      newKeyValue.select();
      copyStatus.textContent = messages.messageCopyFailed;
    }
  });

  keysBody.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-revoke]");
    if (!button) {
      return;
    }
    revoking = button.dataset.revoke;
    document.getElementById("revoke-name").textContent = button.dataset.keyName;
    dialog.showModal();
  });

  document.getElementById("revoke-cancel").addEventListener("click", () => {
    revoking = null;
    dialog.close();
  });

  document.getElementById("revoke-confirm").addEventListener("click", async () => {
    const keyId = revoking;
    dialog.close();
    revoking = null;
    const result = await api.call("DELETE", `/api/v1/keys/${encodeURIComponent(keyId)}`);
    if (!result.ok) {
      api.showProblem(keyError, result, messages);
      return;
    }
    await reloadKeys();
  });

  // Billing: the routes return 404 before billing exists and 503 when it is not configured.

  const billingStatus = document.getElementById("billing-status");
  const billingError = document.getElementById("billing-error");
  const portalActions = document.getElementById("portal-actions");

  const billingUnavailable = (result) => result.status === 404 || result.status === 503;

  const disableCheckout = () => {
    for (const button of root.querySelectorAll("[data-checkout-plan], [data-checkout-pack]")) {
      button.disabled = true;
    }
  };

  const showSubscription = async () => {
    const result = await api.call("GET", "/api/v1/billing/subscription");
    if (billingUnavailable(result)) {
      billingStatus.textContent =
        result.status === 404 ? messages.messageBillingMissing : messages.messageBillingOff;
      disableCheckout();
      return;
    }
    if (!result.ok) {
      billingStatus.textContent = "";
      api.showProblem(billingError, result, messages);
      return;
    }
    const subscription = result.body;
    if (subscription.billing_configured === false) {
      billingStatus.textContent = messages.messageBillingOff;
      disableCheckout();
      return;
    }
    if (!subscription.status || subscription.status === "none") {
      billingStatus.textContent = messages.messageNoSubscription;
      return;
    }
    let text = api.format(messages.messageSubscription, {
      plan: subscription.plan || "",
      status: subscription.status,
    });
    if (subscription.current_period_end) {
      const template = subscription.cancel_at_period_end ? messages.messageCancels : messages.messageRenews;
      // Unix seconds, shown as the UTC date.
      const date = new Date(subscription.current_period_end * 1000).toISOString().slice(0, 10);
      text += ` ${api.format(template, { date })}`;
    }
    billingStatus.textContent = text;
    portalActions.hidden = false;
  };

  const goTo = async (path, body) => {
    billingError.hidden = true;
    const result = await api.call("POST", path, body);
    if (result.ok && result.body.url) {
      window.location.assign(result.body.url);
    } else if (billingUnavailable(result)) {
      billingStatus.textContent =
        result.status === 404 ? messages.messageBillingMissing : messages.messageBillingOff;
      disableCheckout();
    } else {
      api.showProblem(billingError, result, messages);
    }
  };

  root.addEventListener("click", (event) => {
    const plan = event.target.closest("[data-checkout-plan]");
    const pack = event.target.closest("[data-checkout-pack]");
    if (plan) {
      goTo("/api/v1/billing/checkout", { plan: plan.dataset.checkoutPlan });
    } else if (pack) {
      goTo("/api/v1/billing/checkout", { pack: pack.dataset.checkoutPack });
    }
  });
  document.getElementById("open-portal").addEventListener("click", () => goTo("/api/v1/billing/portal"));

  drawUsage();
  showSubscription();
})();
