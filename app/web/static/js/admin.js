// The admin dashboard: charts of usage, errors and latency; revenue and health from their routes.
"use strict";

(() => {
  const root = document.getElementById("admin");
  if (!root) {
    return;
  }
  const api = window.visioncraftApi;
  const messages = root.dataset;
  const charts = JSON.parse(document.getElementById("admin-charts").textContent);

  const chart = (id, config) => {
    const canvas = document.getElementById(id);
    if (window.Chart && canvas) {
      config.options = { animation: false, maintainAspectRatio: false, ...(config.options || {}) };
      new window.Chart(canvas, config);
    }
  };

  const drawUsage = () => {
    const groups = [...new Set(charts.usage.map((row) => row.group))];
    chart("usage-chart", {
      type: "bar",
      data: {
        labels: charts.days.map((day) => day.slice(5)),
        datasets: groups.map((group) => ({
          label: group,
          data: charts.days.map((day) =>
            charts.usage.filter((row) => row.group === group && row.date === day).reduce((sum, row) => sum + row.images, 0),
          ),
        })),
      },
      options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } } },
    });
  };

  const drawOutcomes = () => {
    const byDay = new Map(charts.outcomes.map((row) => [row.date, row]));
    chart("outcomes-chart", {
      type: "line",
      data: {
        labels: charts.days.map((day) => day.slice(5)),
        datasets: [
          {
            label: messages.messageErrorRate,
            yAxisID: "rate",
            data: charts.days.map((day) => (byDay.has(day) ? 100 * byDay.get(day).error_rate : null)),
          },
          {
            label: messages.messageLatency,
            yAxisID: "latency",
            data: charts.days.map((day) => (byDay.has(day) ? byDay.get(day).mean_duration_ms : null)),
          },
        ],
      },
      options: {
        spanGaps: true,
        scales: {
          rate: { position: "left", beginAtZero: true, suggestedMax: 10 },
          latency: { position: "right", beginAtZero: true, grid: { drawOnChartArea: false } },
        },
      },
    });
  };

  const unavailable = (result) => result.status === 404 || result.status === 503;

  // The revenue route answers `currency`, `mrr`, `mrr_by_plan`, `subscriptions` (active and
  // past-due counts) and a per-UTC-day `data` series of counts and amounts.
  const showRevenue = async () => {
    const status = document.getElementById("revenue-status");
    const result = await api.call("GET", "/api/v1/admin/revenue");
    if (unavailable(result)) {
      status.textContent = result.status === 404 ? messages.messageRevenueMissing : messages.messageRevenueOff;
      return;
    }
    if (!result.ok) {
      status.textContent = messages.messageFailed;
      return;
    }
    status.textContent = "";
    const body = result.body;
    // Amounts are integers in the currency's smallest unit; Intl knows how many decimals it has.
    const money = new Intl.NumberFormat(messages.locale || undefined, {
      style: "currency",
      currency: String(body.currency || "jpy").toUpperCase(),
    });
    const decimals = money.resolvedOptions().maximumFractionDigits;
    const amount = (value) => money.format(value / 10 ** decimals);
    const days = Array.isArray(body.data) ? body.data : [];
    const summary = document.getElementById("revenue-summary");
    addDetail(summary, messages.messageMrr, amount(body.mrr || 0));
    for (const plan of body.mrr_by_plan || []) {
      addDetail(summary, `${messages.messageMrr} · ${plan.plan}`, amount(plan.mrr));
    }
    addDetail(summary, messages.messageActiveSubscriptions, (body.subscriptions || {}).active || 0);
    addDetail(summary, messages.messagePastDueSubscriptions, (body.subscriptions || {}).past_due || 0);
    addDetail(summary, messages.messageRevenueTotal, amount(days.reduce((sum, day) => sum + (day.revenue || 0), 0)));
    summary.hidden = false;
    if (days.length > 0) {
      document.getElementById("revenue-box").hidden = false;
      const series = [
        ["payments", messages.messagePayments],
        ["failed_payments", messages.messageFailedPayments],
        ["packs_sold", messages.messagePacksSold],
        ["refunds", messages.messageRefunds],
      ];
      chart("revenue-chart", {
        type: "line",
        data: {
          labels: days.map((day) => String(day.date || "").slice(5)),
          datasets: series.map(([field, label]) => ({ label, data: days.map((day) => day[field] || 0) })),
        },
      });
    }
  };

  const addDetail = (list, name, value) => {
    const row = api.element("div");
    row.append(api.element("dt", "", name), api.element("dd", "", String(value)));
    list.append(row);
  };

  const showHealth = async () => {
    const status = document.getElementById("health-status");
    const result = await api.call("GET", "/api/v1/monitoring/health");
    if (result.status === 404) {
      status.textContent = messages.messageHealthMissing;
      return;
    }
    const body = result.body || {};
    status.textContent = api.format(messages.messageStatus, { status: body.status || result.status });
    const checks = body.checks || body.components || {};
    const list = document.getElementById("health-checks");
    const entries = Array.isArray(checks) ? checks.map((check) => [check.name, check]) : Object.entries(checks);
    for (const [name, value] of entries) {
      // The health format keys checks by `component:measurement`, each an array of results.
      const check = Array.isArray(value) ? value[0] || {} : value;
      const state = typeof check === "string" ? check : check.status;
      const observed =
        check.observedValue !== undefined && check.observedValue !== null
          ? ` ${check.observedValue}${check.observedUnit ? ` ${check.observedUnit}` : ""}`
          : "";
      const output = check.output ? ` (${check.output})` : "";
      list.append(api.element("li", `check check-${state}`, `${name}: ${state}${observed}${output}`));
    }
    list.hidden = entries.length === 0;
  };

  drawUsage();
  drawOutcomes();
  showRevenue();
  showHealth();
})();
