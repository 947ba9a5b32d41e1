// Drives the pushgate console in Debian's headless Chromium as a person would:
// logs in with a token, opens a running activity and watches its log grow (it lets the build
// go on by creating the file the build waits for), sees it succeed, then rolls the environment
// back from the environments table and sees the release change, then promotes main to staging
// and sees staging run main's commit. Saves a screenshot.
//
// First, as a viewer and as a developer, it sees only the actions their roles allow.
//
// node console.mjs BASE_URL TOKEN ACTIVITY_ID GATE_FILE SCREENSHOT VIEWER_TOKEN DEVELOPER_TOKEN
// Exits non-zero, saying what it did not see, on any failure.
import { chromium } from "playwright-core";
import { writeFileSync } from "node:fs";

const [base, token, activity, gate, screenshot, viewer, developer] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
const step = (what) => console.log("step: " + what);
try {
  // Each role sees the buttons it may use, and no other.
  for (const [role, secret, want] of [["viewer", viewer, []], ["developer", developer, ["redeploy"]]]) {
    const context = await browser.newContext();
    const page = await context.newPage();
    page.setDefaultTimeout(60000);
    await page.goto(base);
    await page.fill("#token", secret);
    await page.click("#loginForm button");
    await page.waitForSelector("tr[data-env=main]");
    const seen = await page.$$eval("tr[data-env=main] button[data-action]", (bs) => bs.map((b) => b.dataset.action));
    if (JSON.stringify(seen) !== JSON.stringify(want)) throw new Error(`a ${role} sees ${seen} (want ${want})`);
    step(`a ${role} sees the actions ${want.join(", ") || "none"}`);
    await context.close();
  }
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.setDefaultTimeout(60000);
  await page.goto(base);
  step("the login form");
  await page.fill("#token", token);
  await page.click("#loginForm button");
  await page.waitForSelector("tr[data-env=main]");
  step("environment main is listed");
  const mainRelease = async () => (await page.textContent("tr[data-env=main] [data-field=release]")).trim();
  const before = await mainRelease();

  step("activity " + activity + " opened from the list");
  await page.click(`tr.activity[data-id="${activity}"]`);
  await page.waitForFunction(() => document.getElementById("log").textContent.includes("before-the-wait"));
  const state = await page.textContent("#detailState");
  if (!/In progress/.test(state)) throw new Error("the running activity says " + state);
  step("its log shows the running build; letting it go on");
  writeFileSync(gate, "");
  await page.waitForFunction(() => document.getElementById("log").textContent.includes("after-the-wait"));
  await page.waitForFunction(() => document.getElementById("detailState").textContent.includes("Success"));
  step("the log grew to the end and says Success");
  await page.waitForFunction(
    (old) => document.querySelector("tr[data-env=main] [data-field=release]").textContent.trim() !== old,
    before,
  );
  const deployed = await mainRelease();
  step("main runs release " + deployed);

  await page.selectOption("tr[data-env=main] select", before);
  await page.click('tr[data-env=main] button[data-action="rollback"]');
  await page.waitForFunction(
    (want) => document.querySelector("tr[data-env=main] [data-field=release]").textContent.trim() === want,
    before,
  );
  step("rolled back: main runs release " + before + " again");
  await page.waitForFunction(() => document.getElementById("detailState").textContent.includes("Success"));

  // Only the next step of the pipeline: staging, not production.
  const offered = await page.$$eval('tr[data-env=main] select[aria-label="environment to promote to"] option', (os) => os.map((o) => o.value));
  if (JSON.stringify(offered) !== '["staging"]') throw new Error("main may be promoted to " + offered);
  const subject = await page.textContent(`tr.activity[data-id="${activity}"] .subject`);
  if (!subject.includes("slow")) throw new Error("the activity shows the subject " + subject);
  step("main is offered promotion to staging only; its activity shows the commit's subject");
  await page.selectOption('tr[data-env=main] select[aria-label="environment to promote to"]', "staging");
  await page.click('tr[data-env=main] button[data-action="promote"]');
  // (Listed before, as declared and not deployed: now with its release.)
  await page.waitForSelector("tr[data-env=staging] code");
  await page.waitForFunction(() => document.getElementById("detailTitle").textContent.includes("promote of staging"));
  await page.waitForFunction(() => document.getElementById("detailState").textContent.includes("Success"));
  const commitOf = async (env) => (await page.textContent(`tr[data-env=${env}] code`)).trim();
  if ((await commitOf("staging")) !== (await commitOf("main"))) throw new Error("staging does not run main's commit");
  step("promoted: staging runs main's commit " + (await commitOf("main")));
  await page.screenshot({ path: screenshot, fullPage: true });
  step("screenshot " + screenshot);
} catch (e) {
  console.error("console test failed: " + e.message);
  process.exitCode = 1;
} finally {
  await browser.close();
}
