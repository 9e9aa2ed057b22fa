// Money is integer fen, times are shown in Asia/Shanghai whatever the browser's zone (DESIGN.md §3).
import dayjs from 'dayjs';
import utc from 'dayjs/plugin/utc';
import timezone from 'dayjs/plugin/timezone';

dayjs.extend(utc);
dayjs.extend(timezone);

export const SHANGHAI = 'Asia/Shanghai';

export function yuan(fen: number | null | undefined): string {
  if (fen === null || fen === undefined) return '—';
  const sign = fen < 0 ? '-' : '';
  const abs = Math.abs(fen);
  return `${sign}¥${Math.floor(abs / 100).toLocaleString('en-US')}.${String(abs % 100).padStart(2, '0')}`;
}

export function time(iso: string | null | undefined, withSeconds = true): string {
  if (!iso) return '—';
  return dayjs(iso).tz(SHANGHAI).format(withSeconds ? 'YYYY-MM-DD HH:mm:ss' : 'YYYY-MM-DD HH:mm');
}

export function today(): string {
  return dayjs().tz(SHANGHAI).format('YYYY-MM-DD');
}

export function percent(rate: number | null | undefined): string {
  if (rate === null || rate === undefined) return '—';
  return `${(rate * 100).toFixed(1)}%`;
}

/** A day picked in the console as an aware ISO bound in Shanghai time (the API refuses naive times). */
export function dayBound(day: dayjs.Dayjs, end: boolean): string {
  const d = dayjs.tz(day.format('YYYY-MM-DD'), SHANGHAI);
  return (end ? d.endOf('day') : d.startOf('day')).format('YYYY-MM-DDTHH:mm:ssZ');
}
