// Every view (views.mjs) at 390 px (a phone): nothing wider than the screen, the navigation
// reachable; a screenshot of each; axe-core finds nothing serious at that width.  Also a
// keyboard check: Tab from the top reaches the skip link first.

import { run, assert, shot, checkA11y } from './lib.mjs';
import { VIEWS, seed } from './views.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

await run('phone', async ({ daemon, newPage }) => {
  // something in every view (views.mjs: a drive with a long name, a chain, a report, a policy…)
  const ids = await seed(daemon);
  const page = await newPage({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 1, isMobile: true, hasTouch: true });
  for (const view of VIEWS) {
    const v = view.path(ids);
    await page.goto(`${daemon.url}/#/${v}`);
    await page.getByRole('heading', { level: 1 }).first().waitFor();
    await page.locator('#conn[data-state=live]').waitFor();
    await page.locator(view.ready).first().waitFor();
    if (view.open) await view.open(page);
    await sleep(300);
    const m = await page.evaluate(() => {
      const over = [];
      for (const el of document.querySelectorAll('body *')) {
        const r = el.getBoundingClientRect();
        if (r.width && r.right > window.innerWidth + 1 && !el.closest('.table-wrap, .timeline')) over.push(`${el.tagName}.${el.className} right=${Math.round(r.right)}`);
      }
      return { sw: document.documentElement.scrollWidth, iw: window.innerWidth, over: over.slice(0, 5) };
    });
    assert(m.sw <= m.iw, `${v}: page is ${m.sw} px wide at ${m.iw} px (${m.over.join('; ')})`);
    assert(m.over.length === 0, `${v}: elements past the right edge: ${m.over.join('; ')}`);
    await shot(page, `phone-${view.name}`);
    // axe-core at this width too (test_a11y checks the desktop layout)
    const bad = await checkA11y(page, `phone ${view.name}`);
    assert(bad.length === 0, `${v}: serious or critical accessibility violations at 390 px (details above)`);
  }

  // keyboard: the first Tab reaches the skip link, which moves the focus to the content
  await page.goto('about:blank');
  await page.goto(`${daemon.url}/#/overview`);
  await page.getByRole('heading', { name: 'Overview' }).waitFor();
  await page.keyboard.press('Tab');
  assert(await page.evaluate(() => document.activeElement.id) === 'skip', 'skip link first');
  await page.keyboard.press('Enter');
  assert(await page.evaluate(() => document.activeElement.id) === 'main', 'focus moved to the content');
});
