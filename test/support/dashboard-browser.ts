/**
 * The system Chromium (Debian's `chromium`, installed by .ci/run) driven by playwright-core for
 * the dashboard's browser tests: one launch recipe, deadlines scaled like every other wait
 * (slowdown.ts), and every page error or console error collected into `problems`, which the
 * tests assert empty.
 */
import { chromium, type Browser, type Page } from 'playwright-core';
import { scaled } from './wait.js';

export const CHROMIUM = '/usr/bin/chromium';
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

export function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, args: ARGS, timeout: scaled(30_000) });
}

/** A new page of `browser` whose errors land in `problems` (tagged with `label` when given). */
export async function watchedPage(browser: Browser, problems: string[], opts: { height?: number; label?: string } = {}): Promise<Page> {
  const page = await browser.newPage({ viewport: { width: 1440, height: opts.height ?? 1000 } });
  page.setDefaultTimeout(scaled(30_000));
  const tag = opts.label === undefined ? '' : ` (${opts.label})`;
  page.on('pageerror', (e) => problems.push(`pageerror${tag}: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console ${m.type()}${tag}: ${m.text()}`);
  });
  return page;
}
