/**
 * "Did you mean …?" for misspelled keys, actions, names and variables: the closest candidate by
 * edit distance (optimal string alignment: insertions, deletions, substitutions and swaps of two
 * neighbours each cost 1), ignoring case.
 */

/** Edit distance between `a` and `b`, counting a swap of two neighbouring characters as one edit. */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}

/**
 * The candidate `word` was most likely meant to be, or undefined when none is close: one edit
 * for words of up to 3 characters, two for longer ones; a word that is a prefix of a candidate
 * (or the reverse, 3 characters at least) counts as two edits.
 */
export function closest(word: string, candidates: Iterable<string>): string | undefined {
  const w = word.toLowerCase();
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const c of candidates) {
    const l = c.toLowerCase();
    let d = editDistance(w, l);
    if (d > 2 && Math.min(w.length, l.length) >= 3 && (l.startsWith(w) || w.startsWith(l))) d = 2;
    const limit = Math.max(w.length, l.length) <= 3 ? 1 : 2;
    if (d <= limit && d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  return best;
}
