import { Module } from '@nestjs/common';
import { LiveController } from './live.controller.js';

/** The page at `/` that shows the products table live, in any browser. */
@Module({ controllers: [LiveController] })
export class LiveModule {}
