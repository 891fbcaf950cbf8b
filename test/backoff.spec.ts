import { Backoff } from '../lib/pgln.backoff.js';

describe('Backoff (exponential, full jitter)', () => {
  const options = { initialDelayMs: 100, maxDelayMs: 1000 };

  it('makes the first attempt at once', () => {
    expect(new Backoff(options, () => 0.999).delay(0)).toBe(0);
  });

  it('doubles the cap per attempt up to maxDelayMs', () => {
    const highest = new Backoff(options, () => 0.999999);
    expect([1, 2, 3, 4, 5, 6, 50].map((attempt) => highest.delay(attempt))).toEqual([99, 199, 399, 799, 999, 999, 999]);
  });

  it('draws each delay uniformly below the cap', () => {
    const values = [0, 0.25, 0.5];
    const backoff = new Backoff(options, () => values.shift()!);
    expect([backoff.delay(3), backoff.delay(3), backoff.delay(3)]).toEqual([0, 100, 200]);
  });

  it('stops waiting when aborted', async () => {
    const backoff = new Backoff({ initialDelayMs: 60_000, maxDelayMs: 60_000 }, () => 0.999);
    const abort = new AbortController();
    const waiting = backoff.wait(1, abort.signal);
    abort.abort();
    await expect(waiting).rejects.toMatchObject({ name: 'AbortError' });
  });
});
