/**
 * The three HTTP-date forms of RFC 9110 section 5.6.7, read strictly and always as GMT
 * (`Date.parse` would also take "tomorrow 5", and read asctime as local time).
 */

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const MONTH = MONTHS.join('|');
const DAY = 'Mon|Tue|Wed|Thu|Fri|Sat|Sun';
const DAY_NAME = 'Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday';
const TIME = '(\\d{2}):(\\d{2}):(\\d{2})';

/** `Sun, 06 Nov 1994 08:49:37 GMT` */
const IMF_FIXDATE = new RegExp(`^(?:${DAY}), (\\d{2}) (${MONTH}) (\\d{4}) ${TIME} GMT$`);
/** `Sunday, 06-Nov-94 08:49:37 GMT` (obsolete) */
const RFC850_DATE = new RegExp(`^(?:${DAY_NAME}), (\\d{2})-(${MONTH})-(\\d{2}) ${TIME} GMT$`);
/** `Sun Nov  6 08:49:37 1994` (obsolete) */
const ASCTIME_DATE = new RegExp(`^(?:${DAY}) (${MONTH}) ( \\d|\\d{2}) ${TIME} (\\d{4})$`);

type Field = string | undefined;

function toEpoch(
  year: number,
  month: Field,
  day: Field,
  h: Field,
  m: Field,
  s: Field,
): number | undefined {
  const monthIndex = MONTHS.indexOf(month ?? '');
  const d = Number(day?.trim());
  const hour = Number(h);
  const minute = Number(m);
  const second = Number(s);
  if (monthIndex < 0 || !(d >= 1 && hour <= 23 && minute <= 59 && second <= 60)) return undefined;
  const at = Date.UTC(year, monthIndex, d, hour, minute, second);
  // Date.UTC rolls 31 Nov over to 1 Dec: refuse a day the month does not have.
  if (Number.isNaN(at) || new Date(at).getUTCDate() !== d) return undefined;
  return at;
}

/**
 * Reads an HTTP-date, giving epoch ms, or `undefined` when `value` is none of the three forms.
 * A two-digit RFC 850 year more than 50 years ahead of `now` is taken from the past century.
 */
export function parseHttpDate(value: string, now: number): number | undefined {
  let match = IMF_FIXDATE.exec(value);
  if (match) {
    const [, day, month, year, h, m, s] = match;
    return toEpoch(Number(year), month, day, h, m, s);
  }
  match = RFC850_DATE.exec(value);
  if (match) {
    const [, day, month, yy, h, m, s] = match;
    const thisYear = new Date(now).getUTCFullYear();
    let year = Math.floor(thisYear / 100) * 100 + Number(yy);
    if (year > thisYear + 50) year -= 100;
    return toEpoch(year, month, day, h, m, s);
  }
  match = ASCTIME_DATE.exec(value);
  if (match) {
    const [, month, day, h, m, s, year] = match;
    return toEpoch(Number(year), month, day, h, m, s);
  }
  return undefined;
}
