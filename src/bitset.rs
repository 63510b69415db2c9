//! A fixed-size set of symbol indices as bits, walked in ascending order: the per-bar passes over
//! open positions and stops visit the few members instead of every symbol.

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SymbolSet {
    words: Vec<u64>,
}

impl SymbolSet {
    /// An empty set for symbols `0..n_symbols`.
    pub fn new(n_symbols: usize) -> Self {
        Self { words: vec![0; n_symbols.div_ceil(64)] }
    }

    pub fn insert(&mut self, symbol: usize) {
        self.words[symbol / 64] |= 1 << (symbol % 64);
    }

    pub fn remove(&mut self, symbol: usize) {
        self.words[symbol / 64] &= !(1 << (symbol % 64));
    }

    /// Put `symbol` in the set or take it out.
    pub fn assign(&mut self, symbol: usize, member: bool) {
        if member {
            self.insert(symbol);
        } else {
            self.remove(symbol);
        }
    }

    /// Empty, sized for symbols `0..n_symbols`.
    pub fn reset(&mut self, n_symbols: usize) {
        self.words.clear();
        self.words.resize(n_symbols.div_ceil(64), 0);
    }

    /// Set to the symbols whose `values` entry is non-zero, plus the members of `other` (built a
    /// word at a time, without a branch per symbol).
    pub fn assign_nonzero_or(&mut self, values: &[f64], other: &SymbolSet) {
        for ((word, chunk), other) in self.words.iter_mut().zip(values.chunks(64)).zip(&other.words) {
            let mut bits = 0u64;
            for (bit, value) in chunk.iter().enumerate() {
                bits |= ((*value != 0.0) as u64) << bit;
            }
            *word = bits | other;
        }
    }

    /// Add the symbols whose `values` entry is non-zero.
    pub fn insert_nonzero(&mut self, values: &[f64]) {
        for (word, chunk) in self.words.iter_mut().zip(values.chunks(64)) {
            let mut bits = 0u64;
            for (bit, value) in chunk.iter().enumerate() {
                bits |= ((*value != 0.0) as u64) << bit;
            }
            *word |= bits;
        }
    }

    pub fn contains(&self, symbol: usize) -> bool {
        self.words.get(symbol / 64).is_some_and(|word| word & (1 << (symbol % 64)) != 0)
    }

    /// The smallest member at or after `from`. Walking with `next(member + 1)` lets the caller change
    /// the set between steps (members before the cursor are not revisited).
    pub fn next(&self, from: usize) -> Option<usize> {
        let mut word = from / 64;
        let mut bits = *self.words.get(word)? & (!0u64 << (from % 64));
        loop {
            if bits != 0 {
                return Some(word * 64 + bits.trailing_zeros() as usize);
            }
            word += 1;
            bits = *self.words.get(word)?;
        }
    }

    /// Members in ascending order.
    pub fn iter(&self) -> Members<'_> {
        Members { words: &self.words, word: 0, bits: self.words.first().copied().unwrap_or(0) }
    }

    /// Number of 64-symbol words; with [`SymbolSet::word`] and [`Bits`], a caller can walk the
    /// members of a copied word while it changes the set (members `64·w + b` for `b` in
    /// `Bits(set.word(w))`).
    pub fn word_count(&self) -> usize {
        self.words.len()
    }

    /// The members `64·w .. 64·w + 64` as bits.
    pub fn word(&self, w: usize) -> u64 {
        self.words[w]
    }
}

/// Members of a [`SymbolSet`], ascending.
pub struct Members<'a> {
    words: &'a [u64],
    word: usize,
    bits: u64,
}

impl Iterator for Members<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        while self.bits == 0 {
            self.word += 1;
            self.bits = *self.words.get(self.word)?;
        }
        let bit = self.bits.trailing_zeros() as usize;
        self.bits &= self.bits - 1;
        Some(self.word * 64 + bit)
    }
}

/// The set bits of one word, lowest first.
pub struct Bits(pub u64);

impl Iterator for Bits {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        (self.0 != 0).then(|| {
            let bit = self.0.trailing_zeros() as usize;
            self.0 &= self.0 - 1;
            bit
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_members_in_order_across_words() {
        let mut set = SymbolSet::new(192);
        for symbol in [130, 0, 63, 5, 191, 64] {
            set.insert(symbol);
        }
        set.insert(7);
        set.remove(7);
        assert_eq!(set.iter().collect::<Vec<_>>(), [0, 5, 63, 64, 130, 191]);
        let mut walked = Vec::new();
        let mut next = set.next(0);
        while let Some(symbol) = next {
            walked.push(symbol);
            next = set.next(symbol + 1);
        }
        assert_eq!(walked, [0, 5, 63, 64, 130, 191]);
        let by_words: Vec<usize> =
            (0..set.word_count()).flat_map(|w| Bits(set.word(w)).map(move |bit| 64 * w + bit)).collect();
        assert_eq!(by_words, [0, 5, 63, 64, 130, 191]);
        assert_eq!(SymbolSet::new(0).iter().count(), 0);
        assert_eq!(SymbolSet::new(200).iter().count(), 0);
        assert_eq!(set.next(192), None);
        assert!(set.contains(64) && !set.contains(65) && !set.contains(1000));
        assert_eq!(SymbolSet::new(0).next(0), None);
    }

    #[test]
    fn nonzero_values_united_with_another_set() {
        let mut values = vec![0.0; 130];
        values[3] = 1.5;
        values[64] = -0.25;
        values[129] = f64::NAN;
        let mut other = SymbolSet::new(130);
        other.insert(3);
        other.insert(70);
        let mut set = SymbolSet::new(130);
        set.insert(5);
        set.assign_nonzero_or(&values, &other);
        assert_eq!(set.iter().collect::<Vec<_>>(), [3, 64, 70, 129]);
    }
}
