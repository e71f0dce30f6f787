package dev.waystation.client;

/**
 * One problem with one field of a request, from the {@code google.rpc.BadRequest} of an
 * INVALID_ARGUMENT status; {@code field} is a dot path such as {@code "resume_data.approved"}.
 */
public record FieldViolation(String field, String description) {}
