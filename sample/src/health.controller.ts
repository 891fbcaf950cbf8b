import { Controller, Get } from '@nestjs/common';
import { HealthCheck, HealthCheckService, type HealthCheckResult } from '@nestjs/terminus';
import { PglnHealthIndicator } from 'nestjs-pgln/terminus';

@Controller('health')
export class HealthController {
  constructor(
    private readonly health: HealthCheckService,
    private readonly pgln: PglnHealthIndicator,
  ) {}

  /**
   * 200 `ok` while the listener is live (the cache is in sync); 200 `degraded` while it
   * reconnects or resyncs, for up to 30 s; after that 503: the cache may be stale, so the
   * instance should leave the load balancer.
   */
  @Get()
  @HealthCheck()
  check(): Promise<HealthCheckResult> {
    return this.health.check([() => this.pgln.isHealthy('listener')]);
  }
}
