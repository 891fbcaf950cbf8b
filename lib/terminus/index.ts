export { PglnHealthIndicator, type PglnHealthDetails, type PglnHealthOptions } from './pgln.health-indicator.js';
