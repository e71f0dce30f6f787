package dev.waystation.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import com.google.protobuf.Value;
import dev.waystation.v1.StepPath;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** Values and StepPaths, without a server. */
class ValuesTest {
  @Test
  void jsonLikeDataRoundTripsWithNumbersAsDoubles() {
    Map<String, Object> data = new LinkedHashMap<>();
    data.put("s", "text");
    data.put("n", 3);
    data.put("b", true);
    data.put("null", null);
    data.put("list", List.of(1.5, "x", Map.of("k", false)));
    data.put("array", new Object[] {"a"});

    Object back = Values.toJava(Values.of(data));

    Map<String, Object> expected = new LinkedHashMap<>();
    expected.put("s", "text");
    expected.put("n", 3.0);
    expected.put("b", true);
    expected.put("null", null);
    expected.put("list", List.of(1.5, "x", Map.of("k", false)));
    expected.put("array", List.of("a"));
    assertEquals(expected, back);
  }

  @Test
  void anUnsetValueReadsAsNullAndNonJsonDataIsRefused() {
    assertEquals(null, Values.toJava(Value.getDefaultInstance()));
    assertThrows(IllegalArgumentException.class, () -> Values.of(new Object()));
    assertThrows(IllegalArgumentException.class, () -> Values.of(Map.of(1, "x")));
  }

  @Test
  void aTextPathSplitsOnDotsAndPrintsBack() {
    StepPath path = StepPaths.of("review.legal-review");
    assertEquals(Arrays.asList("review", "legal-review"), path.getSegmentsList());
    assertEquals(path, StepPaths.ofSegments("review", "legal-review"));
    assertEquals("review.legal-review", StepPaths.toText(path));
    assertThrows(IllegalArgumentException.class, () -> StepPaths.of("a..b"));
    assertThrows(IllegalArgumentException.class, () -> StepPaths.of(""));
  }
}
