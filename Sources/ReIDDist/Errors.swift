// Errors by domain. Each message names what is wrong (the file, key, value,
// step or rank) in one line; the command line prints it and exits with 1.
// Data errors (DataError) and image errors (ImageError) live with their
// readers in ReIDData and ReIDImage; file writes fail with ReIDCore's
// FileWriteError.

/// A one-line error of one domain; the domains are distinct types, so a caller can tell
/// a configuration mistake from a damaged checkpoint (`catch let e as CheckpointError`).
public struct DomainError<Domain>: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}

public enum ConfigDomain {}
public enum CheckpointDomain {}
public enum TrainingDomain {}
public enum CommDomain {}

/// A configuration key, a value or a combination of options that cannot work.
public typealias ConfigError = DomainError<ConfigDomain>
/// A checkpoint that is missing, damaged, or does not fit this run.
public typealias CheckpointError = DomainError<CheckpointDomain>
/// Training went wrong numerically (a non-finite loss).
public typealias TrainingError = DomainError<TrainingDomain>
/// Ranks could not talk: an MPI error, a launcher MPI cannot join, replicas that differ,
/// a rank that could not do its share.
public typealias CommError = DomainError<CommDomain>
