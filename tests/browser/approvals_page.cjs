// Drives the gate's approvals page in Debian's Chromium with playwright-core, as an approver
// would: sign in with a token, wait for a held call to appear (live: the page is never
// reloaded), check what it shows, then Approve or Deny it with a reason.
//
//   node approvals_page.cjs URL TOKEN approve|deny PATH SCREENSHOT
//
// Prints "signed-in" once the page has signed in (the test then makes the call), and exits 0
// when the page showed the decision; 1, with the reason, otherwise. The held call's arguments
// carry HTML that would run script if the page used it as HTML: it must show as text.
"use strict";

const { chromium } = require("playwright-core");

function fail(message) {
  throw new Error(message);
}

(async () => {
  const [url, token, verb, path, shot] = process.argv.slice(2);
  const browser = await chromium.launch({
    executablePath: process.env.MCP_PQTLS_CHROMIUM || "/usr/bin/chromium",
    // As root, and on a machine whose network is closed: no sandbox, no background traffic.
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1100, height: 860 } });
    const problems = [];
    page.on("pageerror", (e) => problems.push("page error: " + e));
    // Script errors and CSP violations ("Refused to ..."); the browser's own network lines
    // (the list is 401 until signed in, no favicon) are not the page's errors.
    page.on("console", (m) => {
      if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) problems.push("console: " + m.text());
    });
    page.on("dialog", (d) => { problems.push("dialog: " + d.message()); d.dismiss(); });
    const response = await page.goto(url);
    const csp = response.headers()["content-security-policy"] || "";
    if (!csp.includes("default-src 'none'") || !csp.includes("script-src 'self'")) fail("weak CSP: " + csp);
    await page.fill("#token", token);
    await page.click("#use-token");
    await page.locator("#status", { hasText: "signed in as sub:alice" }).waitFor({ timeout: 20000 });
    console.log("signed-in");
    const card = page.locator("article.call", { hasText: path });
    await card.waitFor({ timeout: 30000 });
    const args = await card.locator("pre.arguments").textContent();
    if (!args.includes("<img src=x") || !args.includes("<script>")) fail("arguments not shown as text: " + args);
    if ((await page.locator("article.call img, article.call script").count()) !== 0) fail("arguments became HTML");
    if ((await page.title()) === "pwned") fail("the arguments' script ran");
    const tls = await card.locator(".tls").textContent();
    if (!/MLKEM/.test(tls) || !/post-quantum/.test(tls)) fail("TLS facts missing: " + tls);
    const caller = await card.locator(".caller").textContent();
    if (!caller.includes("sub agent")) fail("caller missing: " + caller);
    await card.locator(".reason").fill(verb === "approve" ? "checked the path" : "not this one");
    if (shot) await page.screenshot({ path: shot, fullPage: true });
    await card.locator("button." + verb).click();
    const shown = verb === "approve" ? "Approved by sub:alice" : "Denied by sub:alice";
    await card.locator(".outcome", { hasText: shown }).waitFor({ timeout: 20000 });
    if (problems.length) fail(problems.join("; "));
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error(String(e && e.stack ? e.stack : e));
  process.exit(1);
});
