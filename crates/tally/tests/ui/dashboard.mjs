// Drives the tally dashboard in headless Chromium: signs in through the form,
// reports READY on stdout, then waits (the test sends forged tokens) until an
// incident with its reporting countdowns is on the page, checks the countdown
// moves, and saves screenshots (desktop 1280x800 and phone).
//
//   node dashboard.mjs BASE_URL USER PASSWORD SCREENSHOT_DIR
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";
import { createRequire } from "node:module";

// axe-core (npm, pinned by package-lock.json) checks a page against WCAG 2.1
// A and AA; any violation fails the test, listed with the elements it names.
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
}

const [base, user, password, shots] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";

const browser = await chromium.launch({
  executablePath,
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  // Unauthenticated: the dashboard sends us to sign in.
  await page.goto(`${base}/ui`);
  if (!page.url().endsWith("/ui/login")) throw new Error(`not redirected to sign-in: ${page.url()}`);
  await accessible(page, "the sign-in page");
  // A wrong password is refused with a message, not a stack trace.
  await page.fill('input[name="username"]', user);
  await page.fill('input[name="password"]', "wrong-password");
  await page.click('button[type="submit"]');
  await page.waitForSelector("text=Sign-in failed.");
  // Keyboard only: type, Tab to the next field, Enter to submit.
  await page.fill('input[name="username"]', user);
  await page.focus('input[name="password"]');
  await page.keyboard.type(password);
  await page.keyboard.press("Enter");
  await page.waitForURL(`${base}/ui`);
  await page.waitForSelector("#live:text('live')", { timeout: 15000 });
  const none = await page.textContent("#incidents");
  if (!none.includes("No open incident")) throw new Error(`unexpected incident before the attack: ${none}`);
  console.log("READY");

  // Wait for the test's signal that the attack ran, then for the incident.
  const rl = createInterface({ input: process.stdin });
  for await (const line of rl) {
    if (line.trim() === "ATTACKED") break;
  }
  rl.close();
  process.stdin.destroy();
  await page.waitForSelector("[data-incident]", { timeout: 20000 });
  await page.waitForSelector("#incidents >> text=KR Network Act", { timeout: 20000 });
  const first = await page.textContent("#incidents time[data-due]");
  await page.waitForTimeout(2200);
  const later = await page.textContent("#incidents time[data-due]");
  if (first === later) throw new Error(`the countdown does not move: ${first}`);
  await accessible(page, "the dashboard with an open incident");
  const detections = await page.textContent("#detections");
  if (!detections.includes("forged_token")) throw new Error(`no forged_token detection shown: ${detections}`);
  await page.screenshot({ path: `${shots}/dashboard.png`, fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForTimeout(300);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);
  if (overflow) throw new Error("the dashboard overflows a phone's width");
  await page.screenshot({ path: `${shots}/dashboard-phone.png`, fullPage: true });
  console.log(`OK countdown ${first} -> ${later}`);
} finally {
  await browser.close();
}
process.exit(0);
