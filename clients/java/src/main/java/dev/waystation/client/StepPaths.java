package dev.waystation.client;

import dev.waystation.v1.StepPath;
import java.util.Arrays;
import java.util.List;

/**
 * Builds and prints {@link StepPath}s: paths through nested workflows, top-level step first.
 *
 * <p>The text form {@code "review.legal-review"} is for people and for map keys (such as {@code
 * WorkflowResult.getSuspendPayloadMap()}); step ids never contain {@code "."}, so it splits back
 * into the same segments.
 */
public final class StepPaths {
  private StepPaths() {}

  /** The path for a text form: {@code of("review.legal-review")} has two segments. */
  public static StepPath of(String dotted) {
    if (dotted == null || dotted.isEmpty()) {
      throw new IllegalArgumentException("a step path needs at least one segment");
    }
    return ofSegments(dotted.split("\\.", -1));
  }

  /** The path with these segments, none split: {@code ofSegments("review", "legal-review")}. */
  public static StepPath ofSegments(String... segments) {
    return ofSegments(Arrays.asList(segments));
  }

  /** The path with these segments, none split. */
  public static StepPath ofSegments(List<String> segments) {
    if (segments.isEmpty() || segments.stream().anyMatch(s -> s == null || s.isEmpty())) {
      throw new IllegalArgumentException("empty step path segment in " + segments);
    }
    return StepPath.newBuilder().addAllSegments(segments).build();
  }

  /** The text form of a path: its segments joined by {@code "."}. */
  public static String toText(StepPath path) {
    return String.join(".", path.getSegmentsList());
  }
}
