import { Controller, Get, Header, ServiceUnavailableException, Sse, type MessageEvent } from '@nestjs/common';
import { PglnService } from 'nestjs-pgln';
import { map, merge, type Observable } from 'rxjs';
import { Products } from '../products/product.js';
import { LIVE_PAGE } from './live-page.js';

/** How long the browser waits before reconnecting its EventSource after the stream ends (ms). */
const RETRY_MS = 500;

/**
 * The live page at `/`, and the event stream it opens at `/events`: the listener's state, and the
 * `products` channel through `observe()` (an out-of-sync event first, and after every resync: the
 * page refetches then; a change per notification).
 */
@Controller()
export class LiveController {
  constructor(private readonly pgln: PglnService) {}

  @Get()
  @Header('Content-Type', 'text/html; charset=utf-8')
  page(): string {
    return LIVE_PAGE;
  }

  /**
   * A browser that stops reading is dropped past 256 kB of unsent events; reconnecting, it
   * refetches. While the application shuts down: 503 (the page opens a new stream later).
   */
  @Sse('events', { maxPendingDataLength: 256 * 1024 })
  events(): Observable<MessageEvent> {
    if (this.pgln.state === 'closed') throw new ServiceUnavailableException('shutting down');
    return merge(
      this.pgln.state$.pipe(map(({ state }) => ({ type: 'state', data: { state }, retry: RETRY_MS }))),
      this.pgln.observe(Products).pipe(
        map((event) =>
          event.type === 'out-of-sync'
            ? { type: 'out-of-sync', data: { reason: event.reason } }
            : { type: 'change', data: event.payload },
        ),
      ),
    );
  }
}
