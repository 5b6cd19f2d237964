// Errors by domain. Each message names what is wrong (the file, key, value,
// step or rank) in one line; the command line prints it and exits with 1.
// Data errors (DataError) and image errors (ImageError) live with their
// readers in ReIDData and ReIDImage; file writes fail with ReIDCore's
// FileWriteError.

/// A configuration key, a value or a combination of options that cannot work.
public struct ConfigError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// A checkpoint that is missing, damaged, or does not fit this run.
public struct CheckpointError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// Training went wrong numerically (a non-finite loss).
public struct TrainingError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

/// Ranks could not talk: an MPI error, a launcher MPI cannot join, replicas
/// that differ, a rank that could not do its share.
public struct CommError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}
