import { Controller, Get } from '@nestjs/common';
import { PglnService, type PglnState } from 'nestjs-pgln';

@Controller('health')
export class HealthController {
  constructor(private readonly pgln: PglnService) {}

  /** `live` when every channel is in sync; `syncing` or `reconnecting` while the cache may be stale. */
  @Get()
  health(): { listener: PglnState } {
    return { listener: this.pgln.state };
  }
}
