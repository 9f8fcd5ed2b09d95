// Drives an incident's dashboard page in headless Chromium, for an
// administrator and for an auditor: follows the link from the dashboard's
// list, checks the page with axe-core and that it fits a 1280-pixel window,
// acknowledges and adds a note as the administrator (each must appear on the
// timeline), and checks that the auditor sees no action and that the server
// refuses the auditor's forged post and a post without the form token.
// Prints one "OK ..." line per check and saves screenshots.
//
//   node incident.mjs BASE_URL ID ADMIN ADMIN_PASSWORD AUDITOR AUDITOR_PASSWORD SCREENSHOT_DIR
import { chromium } from "playwright-core";
import { createRequire } from "node:module";

const axePath = createRequire(import.meta.url).resolve("axe-core/axe.min.js");
async function accessible(page, what) {
  await page.addScriptTag({ path: axePath });
  const result = await page.evaluate(() =>
    window.axe.run(document, { runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"] } }),
  );
  if (result.violations.length > 0) {
    const list = result.violations
      .map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`)
      .join("\n");
    throw new Error(`accessibility violations on ${what}:\n${list}`);
  }
  console.log(`OK axe ${what}`);
}

// As layout.mjs measures it: nothing wider than the window.
async function fits(page, what) {
  const size = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    client: document.documentElement.clientWidth,
  }));
  if (size.scroll > size.client) throw new Error(`${what} is wider than the window: ${JSON.stringify(size)}`);
  console.log(`OK fits ${what} ${JSON.stringify(size)}`);
}

async function signIn(browser, base, user, password) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  await page.goto(`${base}/ui/login`);
  await page.fill('input[name="username"]', user);
  await page.fill('input[name="password"]', password);
  await page.click('button[type="submit"]');
  await page.waitForURL(`${base}/ui`);
  return page;
}

// A post made by the page's own script (same origin, the session's cookie):
// what a forged form or a script on the dashboard could send.
async function post(page, path, fields) {
  return page.evaluate(
    async ([path, fields]) => {
      const r = await fetch(path, { method: "POST", body: new URLSearchParams(fields), redirect: "manual" });
      return r.status;
    },
    [path, fields],
  );
}

const [base, id, admin, adminPassword, auditor, auditorPassword, shots] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const url = `${base}/ui/incidents/${id}`;

const browser = await chromium.launch({
  executablePath,
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
try {
  // The administrator follows the link from the dashboard's list.
  const page = await signIn(browser, base, admin, adminPassword);
  await page.waitForSelector(`#incidents a[href="/ui/incidents/${id}"]`, { timeout: 20000 });
  await page.click(`#incidents a[href="/ui/incidents/${id}"]`);
  await page.waitForURL(url);
  await page.waitForSelector("h1:has-text('Incident')");
  for (const label of ["Acknowledge", "Add note", "Mark contained"]) {
    if ((await page.locator(`button:has-text("${label}")`).count()) !== 1) throw new Error(`no ${label} button for the administrator`);
  }
  await accessible(page, "the incident page (administrator)");
  await fits(page, "the incident page (administrator) at 1280 px");

  // Acknowledge: the page comes back with it on the timeline.
  await page.click('button:has-text("Acknowledge")');
  await page.waitForSelector(`#timeline >> text=${admin} (dashboard): incident acknowledged`, { timeout: 10000 });
  console.log("OK acknowledged");
  await page.fill("#note-text", "called the manager of the insider");
  await page.click('button:has-text("Add note")');
  await page.waitForSelector(`#timeline >> text=note: called the manager of the insider`, { timeout: 10000 });
  console.log("OK note");
  // A post without the session's form token is refused.
  const noToken = await post(page, `/ui/incidents/${id}/ack`, {});
  if (noToken !== 403) throw new Error(`a post without the form token answered ${noToken}`);
  console.log(`OK no token ${noToken}`);
  await page.screenshot({ path: `${shots}/incident.png`, fullPage: true });

  // The auditor reads the same page, with no action on it.
  const audit = await signIn(browser, base, auditor, auditorPassword);
  await audit.goto(url);
  await audit.waitForSelector(`#timeline >> text=${admin} (dashboard): incident acknowledged`);
  const buttons = await audit.locator("button").allTextContents();
  if (buttons.length !== 1 || buttons[0].trim() !== "Sign out") throw new Error(`the auditor sees buttons: ${buttons}`);
  if ((await audit.locator(`form[action^="/ui/incidents/"]`).count()) !== 0) throw new Error("the auditor sees an action form");
  if ((await audit.locator("textarea").count()) !== 0) throw new Error("the auditor sees the note field");
  console.log("OK auditor sees no action");
  await accessible(audit, "the incident page (auditor)");
  await fits(audit, "the incident page (auditor) at 1280 px");
  // The auditor's forged post, with the auditor's own form token, is refused
  // by the server.
  const token = await audit.getAttribute('input[name="form_token"]', "value");
  const forged = await post(audit, `/ui/incidents/${id}/ack`, { form_token: token });
  if (forged !== 403) throw new Error(`the auditor's forged post answered ${forged}`);
  const contained = await post(audit, `/ui/incidents/${id}/contain`, { form_token: token, apply_suggested: "yes" });
  if (contained !== 403) throw new Error(`the auditor's forged contain answered ${contained}`);
  console.log(`OK auditor refused ${forged}`);
  await audit.screenshot({ path: `${shots}/incident-auditor.png`, fullPage: true });
} finally {
  await browser.close();
}
process.exit(0);
