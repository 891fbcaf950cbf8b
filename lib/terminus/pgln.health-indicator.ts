import { Injectable } from '@nestjs/common';
import { ModuleRef } from '@nestjs/core';
import { HealthIndicatorService, type HealthIndicatorResult } from '@nestjs/terminus';
import { PglnOptionsError } from '../errors/index.js';
import type { PglnStats } from '../interfaces/index.js';
import { DEFAULT_CONNECTION } from '../pgln.constants.js';
import { HEALTH_DOWN_AFTER_INVALID, HEALTH_NOT_LIVE, UNKNOWN_INSTANCE } from '../pgln.messages.js';
import type { PglnService } from '../pgln.service.js';
import { getPglnToken } from '../pgln.tokens.js';

/** Options of {@link PglnHealthIndicator.isHealthy}. */
export interface PglnHealthOptions {
  /**
   * How long, in ms, the listener may be reconnecting or resyncing before it is reported `down`
   * (the instance should then leave the load balancer: its state may be stale). Until then it is
   * `degraded` (Terminus 12; `up` on Terminus 11, which has no such status), so that a blip of a
   * few milliseconds pages no one.
   * @default 30000
   */
  downAfterMs?: number;
  /**
   * The instance to check, for an application with several databases: the `name` given to
   * `PglnModule.forRoot()`.
   * @default 'default'
   */
  connection?: string;
}

/** What the indicator reports under its key, besides `status`. */
export interface PglnHealthDetails {
  /** The listener's state. */
  readonly state: PglnStats['state'];
  /** How long it has been in that state, in ms. */
  readonly stateForMs: number;
  /**
   * How long it has not been live, in ms (0 while live): what `downAfterMs` is compared with. A
   * listener that keeps dropping between reconnecting and syncing is not live all along.
   */
  readonly notLiveForMs: number;
  /** Why it is not `up`; absent when live. */
  readonly message?: string;
  /** Round trip of the last health check of the LISTEN connection, in ms; null before the first. */
  readonly lastHealthCheckMs: number | null;
  /** PostgreSQL's notification queue usage (0 to 1) at that check; null before the first. */
  readonly notificationQueueUsage: number | null;
  /** Notifications waiting, per channel. */
  readonly queued: Readonly<Record<string, number>>;
}

const DEFAULT_DOWN_AFTER_MS = 30_000;

/**
 * A `@nestjs/terminus` health indicator for the LISTEN connection. List it in the `providers` of
 * a module that imports `TerminusModule`:
 *
 * ```ts
 * @Get('health')
 * @HealthCheck()
 * check() {
 *   return this.health.check([() => this.pgln.isHealthy('pgln')]);
 * }
 * ```
 *
 * Works with Terminus 11 and 12 (through `HealthIndicatorService`).
 */
@Injectable()
export class PglnHealthIndicator {
  constructor(
    private readonly health: HealthIndicatorService,
    private readonly moduleRef: ModuleRef,
  ) {}

  /**
   * `up` while the listener is live (every channel in sync). While it has not been live (it
   * connects, resyncs or reconnects, or keeps going between these) for less than `downAfterMs`: `degraded` (HTTP 200) on Terminus 12, `up` on
   * Terminus 11. After that, and once closed: `down` (HTTP 503), since what the application keeps
   * in sync may be stale. The details give the state, how long it has lasted, the last health
   * check's round trip, the server's notification queue usage and each channel's queue.
   *
   * @param key the name of the indicator in the health check's response
   * @throws PglnOptionsError when `downAfterMs` is not a number >= 0, or `connection` names no instance
   */
  isHealthy<const Key extends string>(key: Key, options: PglnHealthOptions = {}): HealthIndicatorResult<Key> {
    const { downAfterMs = DEFAULT_DOWN_AFTER_MS, connection } = options;
    if (typeof downAfterMs !== 'number' || !(downAfterMs >= 0)) {
      throw new PglnOptionsError(HEALTH_DOWN_AFTER_INVALID(String(downAfterMs)));
    }
    const stats = this.service(connection).stats();
    const now = Date.now();
    const notLiveForMs = stats.notLiveSince ? now - stats.notLiveSince.getTime() : 0;
    const details: PglnHealthDetails = {
      state: stats.state,
      stateForMs: now - stats.since.getTime(),
      notLiveForMs,
      lastHealthCheckMs: stats.lastHealthCheck?.roundTripMs ?? null,
      notificationQueueUsage: stats.notificationQueueUsage ?? null,
      queued: Object.fromEntries(Object.entries(stats.channels).map(([channel, figures]) => [channel, figures.queued])),
    };
    const indicator = this.health.check(key);
    if (stats.state === 'live') return indicator.up({ ...details });
    const down = stats.state === 'closed' || notLiveForMs >= downAfterMs;
    const failing = { ...details, message: HEALTH_NOT_LIVE(stats.state, notLiveForMs, downAfterMs, down) };
    if (down) return indicator.down(failing);
    // Terminus 11 has no degraded status: within the grace the listener counts as up there.
    return typeof indicator.degraded === 'function' ? indicator.degraded(failing) : indicator.up(failing);
  }

  /** The instance's service; a name no instance has is the caller's mistake, said as such. */
  private service(connection = DEFAULT_CONNECTION): PglnService {
    try {
      return this.moduleRef.get<PglnService>(getPglnToken(connection), { strict: false });
    } catch (cause) {
      throw new PglnOptionsError(UNKNOWN_INSTANCE(connection), { cause });
    }
  }
}
