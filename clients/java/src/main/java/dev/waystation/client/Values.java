package dev.waystation.client;

import com.google.protobuf.ListValue;
import com.google.protobuf.NullValue;
import com.google.protobuf.Struct;
import com.google.protobuf.Value;
import java.lang.reflect.Array;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Converts JSON-like Java data to and from {@code google.protobuf.Value}, the type in which
 * workflow input, output, suspend payloads and resume data travel.
 *
 * <p>Java to proto ({@link #of}): {@code null}, {@link Boolean}, {@link Number}, {@link
 * CharSequence}, {@link Map} with string keys, {@link Iterable}, arrays (of objects, which may
 * hold nulls, or of numbers and booleans: {@code int[]}, {@code double[]}, {@code boolean[]},
 * ...), and {@link Value}, {@link Struct} or {@link ListValue} as they are. A {@code char[]} is
 * refused like a {@link Character}: pass a {@link String}.
 *
 * <p>Proto to Java ({@link #toJava}): {@code null}, {@link Boolean}, {@link Double} (JSON numbers
 * are doubles on the wire), {@link String}, an insertion-ordered {@code Map<String, Object>} and
 * {@code List<Object>}, all unmodifiable.
 */
public final class Values {
  private Values() {}

  /** The {@code Value} for a JSON-like Java object. */
  public static Value of(Object data) {
    if (data == null) {
      return Value.newBuilder().setNullValue(NullValue.NULL_VALUE).build();
    }
    if (data instanceof Value value) {
      return value;
    }
    if (data instanceof Boolean bool) {
      return Value.newBuilder().setBoolValue(bool).build();
    }
    if (data instanceof Number number) {
      return Value.newBuilder().setNumberValue(number.doubleValue()).build();
    }
    if (data instanceof CharSequence text) {
      return Value.newBuilder().setStringValue(text.toString()).build();
    }
    if (data instanceof Map<?, ?> || data instanceof Struct) {
      return Value.newBuilder().setStructValue(struct(data)).build();
    }
    if (data instanceof ListValue list) {
      return Value.newBuilder().setListValue(list).build();
    }
    if (data instanceof Iterable<?> items) {
      return Value.newBuilder().setListValue(listValue(items)).build();
    }
    if (data.getClass().isArray()) {
      return Value.newBuilder().setListValue(arrayValue(data)).build();
    }
    throw new IllegalArgumentException(
        "not JSON-like data: " + data.getClass().getName() + " (use Map, List, String, ...)");
  }

  /** The {@code Struct} for a map with string keys (or a {@code Struct}, returned as it is). */
  public static Struct struct(Object map) {
    if (map instanceof Struct struct) {
      return struct;
    }
    if (!(map instanceof Map<?, ?> entries)) {
      throw new IllegalArgumentException("not a map: " + map);
    }
    Struct.Builder builder = Struct.newBuilder();
    for (Map.Entry<?, ?> entry : entries.entrySet()) {
      if (!(entry.getKey() instanceof String key)) {
        throw new IllegalArgumentException("map key is not a string: " + entry.getKey());
      }
      builder.putFields(key, of(entry.getValue()));
    }
    return builder.build();
  }

  /** The Java form of a {@code Value}: null, Boolean, Double, String, Map or List. */
  public static Object toJava(Value value) {
    switch (value.getKindCase()) {
      case BOOL_VALUE:
        return value.getBoolValue();
      case NUMBER_VALUE:
        return value.getNumberValue();
      case STRING_VALUE:
        return value.getStringValue();
      case STRUCT_VALUE:
        return toMap(value.getStructValue());
      case LIST_VALUE:
        return toList(value.getListValue());
      default: // NULL_VALUE, or KIND_NOT_SET (an unset field reads as null)
        return null;
    }
  }

  /** The Java form of a {@code Struct}: an unmodifiable, insertion-ordered map. */
  public static Map<String, Object> toMap(Struct struct) {
    Map<String, Object> out = new LinkedHashMap<>();
    struct.getFieldsMap().forEach((key, value) -> out.put(key, toJava(value)));
    return Collections.unmodifiableMap(out);
  }

  /**
   * The Java form of a {@code Value} that must hold an object, e.g. a suspend payload.
   *
   * @throws IllegalArgumentException when it holds something else
   */
  public static Map<String, Object> toMap(Value value) {
    if (!value.hasStructValue()) {
      throw new IllegalArgumentException("not an object: " + value.getKindCase());
    }
    return toMap(value.getStructValue());
  }

  private static List<Object> toList(ListValue list) {
    List<Object> out = new ArrayList<>(list.getValuesCount());
    list.getValuesList().forEach(item -> out.add(toJava(item)));
    return Collections.unmodifiableList(out);
  }

  /** Any array, primitive ones included; its null items are JSON nulls. */
  private static ListValue arrayValue(Object array) {
    ListValue.Builder builder = ListValue.newBuilder();
    for (int i = 0, n = Array.getLength(array); i < n; i++) {
      builder.addValues(of(Array.get(array, i))); // boxes the items of a primitive array
    }
    return builder.build();
  }

  private static ListValue listValue(Iterable<?> items) {
    ListValue.Builder builder = ListValue.newBuilder();
    items.forEach(item -> builder.addValues(of(item)));
    return builder.build();
  }
}
