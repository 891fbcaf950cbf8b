import { Injectable } from '@nestjs/common';
import { OnNotification, OnOutOfSync, type OutOfSyncEvent } from '../../lib/index.js';
import { Inbox } from './wait.js';

/** A provider that records its out-of-sync reasons and the payloads it receives on `channel`. */
export function recorder(channel: string) {
  @Injectable()
  class Recorder {
    readonly reasons: string[] = [];
    readonly received = new Inbox<string>();
    @OnOutOfSync(channel)
    resync(event: OutOfSyncEvent) {
      this.reasons.push(event.reason);
    }
    @OnNotification(channel)
    receive(payload: string) {
      this.received.push(payload);
    }
  }
  return Recorder;
}
