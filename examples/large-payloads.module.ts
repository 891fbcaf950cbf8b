import { Injectable, Module } from '@nestjs/common';
import { OnNotification, PglnModule, PglnService, defineChannel } from 'nestjs-pgln';

/** A whole document in each notification, however large: over 7,999 bytes it goes through the table. */
export const documents = defineChannel<{ id: string; html: string }>('documents');

@Injectable()
export class DocumentCache {
  readonly byId = new Map<string, string>();

  constructor(private readonly pgln: PglnService) {}

  /** Sends the document with its notification: the receivers need no query of their own. */
  publish(id: string, html: string): Promise<void> {
    return this.pgln.notify(documents, { id, html });
  }

  @OnNotification(documents)
  stored({ id, html }: { id: string; html: string }): void {
    this.byId.set(id, html);
  }
}

@Module({
  imports: [
    PglnModule.forRoot({
      connectionString: process.env.DATABASE_URL,
      largePayloads: { retentionMs: 15 * 60_000 }, // table: 'public.pgln_payloads', created if missing
    }),
  ],
  providers: [DocumentCache],
})
export class AppModule {}
