/** Median of `values` (the middle one, or the mean of the two middle ones). */
export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Spread of `values` as `min–max`, formatted with `format`. */
export function spread(values: number[], format: (value: number) => string): string {
  return values.length < 2 ? '' : `${format(Math.min(...values))}–${format(Math.max(...values))}`;
}

export const thousands = (value: number) => Math.round(value).toLocaleString('en-US');
export const fixed = (digits: number) => (value: number) => value.toFixed(digits);
