extension Array {
    /// The `limit` largest of these elements and `more` under `isLarger`, largest first: a run's
    /// few worst cases (longest waits, longest idle gaps), kept as it goes.
    public func keepingLargest(_ more: some Sequence<Element>, limit: Int, by isLarger: (Element, Element) -> Bool) -> [Element] {
        Array((self + more).sorted(by: isLarger).prefix(limit))
    }
}
