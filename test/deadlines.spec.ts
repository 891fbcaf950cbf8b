import { jest } from '@jest/globals';
import { Deadlines, type Deadlined } from '../lib/pgln.deadlines.js';
import { trackTimers } from './support/timers.js';

/** A call that notes when it was told of its deadlines, in ms after it was added. */
class Call implements Deadlined {
  startedAt = 0;
  prev?: Deadlined;
  next?: Deadlined;
  warned = false;
  readonly told: string[] = [];
  private readonly added = performance.now();
  constructor(
    private readonly name: string,
    private readonly log: string[],
  ) {}
  onWarning(): void {
    this.told.push(`warning after ${performance.now() - this.added}`);
    this.log.push(`${this.name} warning`);
  }
  onExpiry(): void {
    this.told.push(`expiry after ${performance.now() - this.added}`);
    this.log.push(`${this.name} expiry`);
  }
}

const after = (told: string) => Number(told.split(' after ')[1]);
/** The timer of `deadlines`, if any: private, read only here. */
const timerOf = (deadlines: Deadlines) => (deadlines as unknown as { timer?: NodeJS.Timeout }).timer;

describe('Deadlines (one timer for many calls of the same length)', () => {
  describe('on a fake clock (setTimeout and performance.now)', () => {
    beforeEach(() => jest.useFakeTimers({ doNotFake: ['nextTick', 'queueMicrotask'] }));
    afterEach(() => jest.useRealTimers());

    it('warns each call warnMs before its end and ends it, in the order they began, at most 1 ms early (a timer may round so)', () => {
      const log: string[] = [];
      const deadlines = new Deadlines(400, 150);
      const a = new Call('a', log);
      deadlines.add(a);
      jest.advanceTimersByTime(100);
      const b = new Call('b', log);
      deadlines.add(b);
      jest.advanceTimersByTime(148);
      expect(log).toEqual([]);
      jest.advanceTimersByTime(3);
      expect(log).toEqual(['a warning']);
      jest.advanceTimersByTime(600);
      expect(log).toEqual(['a warning', 'b warning', 'a expiry', 'b expiry']);
      for (const call of [a, b]) {
        expect(after(call.told[0]!)).toBeGreaterThanOrEqual(249);
        expect(after(call.told[0]!)).toBeLessThanOrEqual(251);
        expect(after(call.told[1]!)).toBeGreaterThanOrEqual(399);
        expect(after(call.told[1]!)).toBeLessThanOrEqual(401);
      }
    });

    it('tells a call removed in time nothing, and leaves the others’ deadlines as they were', () => {
      const log: string[] = [];
      const deadlines = new Deadlines(200, 80);
      const [a, b, c] = ['a', 'b', 'c'].map((name) => new Call(name, log));
      for (const call of [a!, b!, c!]) deadlines.add(call);
      deadlines.remove(b!);
      deadlines.remove(b!); // harmless twice
      jest.advanceTimersByTime(150);
      deadlines.remove(a!); // after its warning, before its end
      jest.advanceTimersByTime(200);
      expect(log).toEqual(['a warning', 'c warning', 'c expiry']);
      expect(b!.told).toEqual([]);
    });
  });

  it('holds the process open only while something is in flight, and leaves no timer once closed', async () => {
    const tracked = trackTimers();
    try {
      const deadlines = new Deadlines(10_000, 1_000);
      const a = new Call('a', []);
      deadlines.add(a);
      expect(timerOf(deadlines)?.hasRef()).toBe(true);
      deadlines.remove(a);
      expect(timerOf(deadlines)?.hasRef()).toBe(false);
      deadlines.add(a);
      expect(timerOf(deadlines)?.hasRef()).toBe(true);
      deadlines.close();
      // Still in flight: its deadlines stand.
      expect(tracked.pending()).toHaveLength(1);
      deadlines.remove(a);
      expect(tracked.pending()).toEqual([]);
    } finally {
      tracked.stop();
    }
  });

  it('keeps one timer, however many calls are in flight', async () => {
    const tracked = trackTimers();
    try {
      const deadlines = new Deadlines(10_000, 1_000);
      const calls = Array.from({ length: 100 }, (_, i) => new Call(String(i), []));
      for (const call of calls) deadlines.add(call);
      expect(tracked.pending()).toHaveLength(1);
      for (const call of calls.reverse()) deadlines.remove(call);
      deadlines.close();
      expect(tracked.pending()).toEqual([]);
    } finally {
      tracked.stop();
    }
  });
});
