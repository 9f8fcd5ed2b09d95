// Opens a page in headless Chromium at a given width and prints how wide its
// content is: {"scroll": document width, "client": viewport width}. A page
// wider than the viewport needs a horizontal scrollbar.
//
//   node layout.mjs URL WIDTH
import { chromium } from "playwright-core";

const [url, width] = process.argv.slice(2);
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const browser = await chromium.launch({
  executablePath,
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
try {
  const page = await browser.newPage({ viewport: { width: Number(width), height: 800 } });
  await page.goto(url);
  const size = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    client: document.documentElement.clientWidth,
  }));
  console.log(JSON.stringify(size));
} finally {
  await browser.close();
}
