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
  void arraysOfObjectsWithNullsAndPrimitiveArraysAreLists() {
    assertEquals(Arrays.asList("a", null), Values.toJava(Values.of(new Object[] {"a", null})));
    assertEquals(List.of(1.0, 2.0), Values.toJava(Values.of(new int[] {1, 2})));
    assertEquals(List.of(7.0), Values.toJava(Values.of(new long[] {7L})));
    assertEquals(List.of(0.5, -1.0), Values.toJava(Values.of(new double[] {0.5, -1})));
    assertEquals(List.of(true, false), Values.toJava(Values.of(new boolean[] {true, false})));
    assertEquals(List.of(), Values.toJava(Values.of(new int[0])));

    Map<String, Object> nested = new LinkedHashMap<>();
    nested.put("grid", new int[][] {{1}, {2, 3}});
    nested.put("maybe", new String[] {null});
    Map<String, Object> expected = new LinkedHashMap<>();
    expected.put("grid", List.of(List.of(1.0), List.of(2.0, 3.0)));
    expected.put("maybe", Arrays.asList((Object) null));
    assertEquals(expected, Values.toJava(Values.of(nested)));
  }

  @Test
  void anUnsetValueReadsAsNullAndNonJsonDataIsRefused() {
    assertEquals(null, Values.toJava(Value.getDefaultInstance()));
    assertThrows(IllegalArgumentException.class, () -> Values.of(new Object()));
    assertThrows(IllegalArgumentException.class, () -> Values.of(Map.of(1, "x")));
    assertThrows(IllegalArgumentException.class, () -> Values.of(new char[] {'a'}));
    assertThrows(IllegalArgumentException.class, () -> Values.of(new Object[] {new Object()}));
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
