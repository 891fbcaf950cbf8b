/** The README's "Several databases": two instances of the module, one per database. */
import { Injectable, Module } from '@nestjs/common';
import { InjectPgln, OnNotification, OnOutOfSync, PglnModule, PglnService } from 'nestjs-pgln';

@Injectable()
export class AuditTrail {
  constructor(
    @InjectPgln('audit') private readonly audit: PglnService, // the named instance
    private readonly pgln: PglnService, // the default one
  ) {}

  @OnNotification('events', { connection: 'audit' }) // the audit database's "events"
  onAuditEvent(payload: string): void {
    void payload;
  }

  @OnOutOfSync('events', { connection: 'audit' })
  reload(): void {}

  /** Records in the audit database what happened in the main one. */
  async record(event: string): Promise<void> {
    await this.audit.notify('events', event);
    await this.pgln.notify('activity', event);
  }
}

@Module({
  imports: [
    PglnModule.forRoot({ connectionString: process.env.DATABASE_URL }), // 'default'
    PglnModule.forRootAsync({
      name: 'audit', // beside the factory, not returned by it
      useFactory: () => ({ connectionString: process.env.AUDIT_DATABASE_URL }),
    }),
  ],
  providers: [AuditTrail],
})
export class AppModule {}
